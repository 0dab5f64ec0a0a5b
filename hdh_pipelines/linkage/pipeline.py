"""One linkage run in three steps: stage the inputs, link on Spark, publish the outputs.

Staging and publication open the warehouse (DuckDB: one writer, so the Dagster
steps that run them hold the warehouse pool); linking opens no warehouse
connection, so the Spark application runs without holding the pool, in its
own step (or on a remote cluster, docs/linkage.md). Each step hands the next a
small picklable value: the version and what it reads.

What staging does depends on the warehouse engine. DuckDB: Spark executors
cannot open the DuckDB file, so the inputs are copied out as Parquet under the
linkage root. Spark: nothing is copied; staging pins the tables the inputs
read to their current data files, and the Spark job reads those files with
the same queries (opt-outs set aside before any linking), then checks that
dbt rewrote none of them while it read (``input_changed`` otherwise).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyspark.sql import SparkSession

from hdh_pipelines.core.private_files import make_tree_owner_only
from hdh_pipelines.linkage.quality import quality_against_truth
from hdh_pipelines.linkage.storage import (
    OUTPUT_TABLES,
    LinkageRoot,
    LinkageStorageError,
    PinnedInputs,
    new_version,
)
from hdh_pipelines.normalisation.warehouse import SparkParquetWarehouse, Warehouse

if TYPE_CHECKING:
    # The engine imports Splink: only a linkage step loads it, not every process that loads the code location.
    from hdh_pipelines.linkage.engine import LinkageSettings


@dataclass(frozen=True)
class StagedInputs:
    """A version's inputs: name → path below the linkage root of each staged copy (DuckDB engine), or the
    pinned warehouse tables and queries (Spark engine); ``truth`` when configured."""

    version: str
    files: dict[str, str]
    stage_seconds: float
    pinned: PinnedInputs | None = None


@dataclass(frozen=True)
class LinkageRun:
    version: str
    stats: dict[str, Any]
    quality: dict[str, Any] | None
    model_parameters: dict[str, Any] | None
    durations: dict[str, float] = field(default_factory=dict)


def stage(root: LinkageRoot, warehouse: Warehouse, *, truth_table: str | None = None) -> StagedInputs:
    """A new version's inputs: copied out of a DuckDB warehouse (opt-outs set aside), pinned on Spark."""
    started = time.perf_counter()
    version = new_version()
    if isinstance(warehouse, SparkParquetWarehouse):
        pinned = root.pin_inputs(warehouse, version, truth_table=truth_table)
        return StagedInputs(version, {}, time.perf_counter() - started, pinned)
    files = root.stage_inputs(warehouse, version, truth_table=truth_table)
    return StagedInputs(version, files, time.perf_counter() - started)


def link_staged(
    spark: SparkSession, root: LinkageRoot, staged: StagedInputs, settings: LinkageSettings | None = None
) -> LinkageRun:
    """Link the staged inputs on Spark and write the version's outputs and summary; no warehouse connection.

    On Spark's warehouse the pinned files are read once, at the start (the engine checkpoints its inputs);
    if dbt rewrote one of them by the end, the outputs are discarded: ``input_changed``, run again.
    """
    from hdh_pipelines.linkage.engine import LinkageInputs, LinkageSettings, link

    settings = settings or LinkageSettings()
    started = time.perf_counter()
    try:
        if staged.pinned is None:
            frames = {name: spark.read.parquet(root.spark_uri(part)) for name, part in staged.files.items()}
        else:
            frames = staged.pinned.read(spark)
        result = link(
            spark, LinkageInputs(frames["pseudonyms"], frames["persons"], frames["cohort"]), settings
        )
        try:
            for table, frame in zip(
                OUTPUT_TABLES, (result.links, result.unlinked, result.ambiguous), strict=True
            ):
                # Written in parallel, one file per partition; Spark's commit protocol writes _SUCCESS last.
                frame.write.mode("error").parquet(root.spark_uri("outputs", staged.version, table))
        finally:
            result.release()
        truth = None
        if "truth" in staged.files:
            truth = root.duckdb_uri(staged.files["truth"])
        elif "truth" in frames:
            # A test or validation table, not a mart: Spark writes it with the inputs' record, for DuckDB.
            frames["truth"].write.mode("error").parquet(root.spark_uri("inputs", staged.version, "truth"))
            if root.local is not None:
                make_tree_owner_only(root.local / "inputs" / staged.version / "truth")
            truth = root.duckdb_uri("inputs", staged.version, "truth", "*.parquet")
    except Exception as error:
        _refuse_if_inputs_changed(root, staged, error)
        raise
    _refuse_if_inputs_changed(root, staged, None)
    link_seconds = time.perf_counter() - started

    quality = None
    if truth is not None:
        quality = quality_against_truth(
            root.duckdb_uri("outputs", staged.version, "links", "*.parquet"), truth
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


def _refuse_if_inputs_changed(root: LinkageRoot, staged: StagedInputs, error: Exception | None) -> None:
    """A run that read pinned tables dbt rewrote meanwhile (a vanished file is one Spark's read fails on)
    publishes nothing: its outputs and inputs are removed, with the reason."""
    changed = staged.pinned.changed() if staged.pinned is not None else []
    if not changed:
        return
    root.discard(staged.version)
    raise LinkageStorageError(
        "input_changed",
        f"The warehouse tables {changed} were rewritten (a dbt run) while linkage run {staged.version} "
        "read them; its outputs were discarded: run the linkage again.",
    ) from error


def publish(root: LinkageRoot, warehouse: Warehouse, run: LinkageRun) -> LinkageRun:
    """Switch the warehouse views to the run's version; the run, with the publication's duration."""
    started = time.perf_counter()
    root.publish(warehouse, run.version)
    return dataclasses.replace(
        run, durations=run.durations | {"publish_seconds": time.perf_counter() - started}
    )


def run_linkage(
    spark: SparkSession,
    root: LinkageRoot,
    warehouse: Warehouse,
    settings: LinkageSettings | None = None,
    *,
    truth_table: str | None = None,
) -> LinkageRun:
    """The three steps in one call (tests, benchmark); the asset runs them as three Dagster steps.

    A failure at any step leaves the published views on the previous run; the half-written version
    is removed by the next successful publication.
    """
    staged = stage(root, warehouse, truth_table=truth_table)
    return publish(root, warehouse, link_staged(spark, root, staged, settings))
