"""One linkage run end to end: stage the inputs, link on Spark, write and publish the outputs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from hdh_pipelines.linkage.engine import LinkageInputs, LinkageSettings, link
from hdh_pipelines.linkage.quality import quality_against_truth
from hdh_pipelines.linkage.storage import OUTPUT_TABLES, LinkageRoot, new_version


@dataclass(frozen=True)
class LinkageRun:
    version: str
    stats: dict[str, Any]
    quality: dict[str, Any] | None
    model_parameters: dict[str, Any] | None
    durations: dict[str, float] = field(default_factory=dict)


def run_linkage(
    spark: SparkSession,
    root: LinkageRoot,
    warehouse_path: str,
    settings: LinkageSettings | None = None,
    *,
    truth_table: str | None = None,
) -> LinkageRun:
    """Link the warehouse's cohort to its persons and publish ``linkage.{links,unlinked,ambiguous}``.

    A failure at any step leaves the published views on the previous run; the half-written version
    is removed by the next successful run.
    """
    settings = settings or LinkageSettings()
    version = new_version()
    durations = {}
    started = time.perf_counter()
    staged = root.stage_inputs(warehouse_path, version, truth_table=truth_table)
    durations["stage_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    result = link(
        spark,
        LinkageInputs(**{k: root.uri(staged[k]) for k in ("pseudonyms", "persons", "cohort")}),
        settings,
    )
    outputs = root.outputs_dir(version)
    try:
        for table, frame in zip(
            OUTPUT_TABLES, (result.links, result.unlinked, result.ambiguous), strict=True
        ):
            # Written in parallel, one file per partition; Spark's commit protocol writes _SUCCESS last.
            frame.write.mode("error").parquet(root.uri(outputs / table))
    finally:
        result.release()
    durations["link_seconds"] = time.perf_counter() - started

    quality = None
    if truth_table:
        quality = quality_against_truth(str(outputs / "links" / "*.parquet"), str(staged["truth"]))
    model_parameters = result.model
    root.write_summary(
        version,
        {"stats": result.stats, "quality": quality, "model": model_parameters, "settings": settings.__dict__},
    )
    started = time.perf_counter()
    root.publish(warehouse_path, version)
    durations["publish_seconds"] = time.perf_counter() - started
    return LinkageRun(version, result.stats, quality, model_parameters, durations)
