"""One linkage run in three steps: stage the inputs, link on Spark, publish the outputs.

Staging and publication open the warehouse (DuckDB: one writer, so the Dagster
steps that run them hold the warehouse pool); linking reads and writes only
files under the linkage root, so the Spark application runs without holding
the pool, in its own step (or on a remote cluster, docs/linkage.md). Each step
hands the next a small picklable value: the version and where its files are.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from hdh_pipelines.linkage.engine import LinkageInputs, LinkageSettings, link
from hdh_pipelines.linkage.quality import quality_against_truth
from hdh_pipelines.linkage.storage import OUTPUT_TABLES, LinkageRoot, new_version


@dataclass(frozen=True)
class StagedInputs:
    """A version's staged inputs: name → path below the linkage root (``truth`` when configured)."""

    version: str
    files: dict[str, str]
    stage_seconds: float


@dataclass(frozen=True)
class LinkageRun:
    version: str
    stats: dict[str, Any]
    quality: dict[str, Any] | None
    model_parameters: dict[str, Any] | None
    durations: dict[str, float] = field(default_factory=dict)


def stage(root: LinkageRoot, warehouse_path: str, *, truth_table: str | None = None) -> StagedInputs:
    """Copy a new version's inputs out of the warehouse (opt-outs set aside)."""
    started = time.perf_counter()
    version = new_version()
    files = root.stage_inputs(warehouse_path, version, truth_table=truth_table)
    return StagedInputs(version, files, time.perf_counter() - started)


def link_staged(
    spark: SparkSession, root: LinkageRoot, staged: StagedInputs, settings: LinkageSettings | None = None
) -> LinkageRun:
    """Link the staged inputs on Spark and write the version's outputs and summary; no warehouse access."""
    settings = settings or LinkageSettings()
    started = time.perf_counter()
    result = link(
        spark,
        LinkageInputs(**{k: root.spark_uri(staged.files[k]) for k in ("pseudonyms", "persons", "cohort")}),
        settings,
    )
    try:
        for table, frame in zip(
            OUTPUT_TABLES, (result.links, result.unlinked, result.ambiguous), strict=True
        ):
            # Written in parallel, one file per partition; Spark's commit protocol writes _SUCCESS last.
            frame.write.mode("error").parquet(root.spark_uri("outputs", staged.version, table))
    finally:
        result.release()
    link_seconds = time.perf_counter() - started

    quality = None
    if "truth" in staged.files:
        quality = quality_against_truth(
            root.duckdb_uri("outputs", staged.version, "links", "*.parquet"),
            root.duckdb_uri(staged.files["truth"]),
        )
    root.write_summary(
        staged.version,
        {"stats": result.stats, "quality": quality, "model": result.model, "settings": settings.__dict__},
    )
    return LinkageRun(
        staged.version,
        result.stats,
        quality,
        result.model,
        {"stage_seconds": staged.stage_seconds, "link_seconds": link_seconds},
    )


def publish(root: LinkageRoot, warehouse_path: str, run: LinkageRun) -> LinkageRun:
    """Switch the warehouse views to the run's version; the run, with the publication's duration."""
    started = time.perf_counter()
    root.publish(warehouse_path, run.version)
    return dataclasses.replace(
        run, durations=run.durations | {"publish_seconds": time.perf_counter() - started}
    )


def run_linkage(
    spark: SparkSession,
    root: LinkageRoot,
    warehouse_path: str,
    settings: LinkageSettings | None = None,
    *,
    truth_table: str | None = None,
) -> LinkageRun:
    """The three steps in one call (tests, benchmark); the asset runs them as three Dagster steps.

    A failure at any step leaves the published views on the previous run; the half-written version
    is removed by the next successful publication.
    """
    staged = stage(root, warehouse_path, truth_table=truth_table)
    return publish(root, warehouse_path, link_staged(spark, root, staged, settings))
