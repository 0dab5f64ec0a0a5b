"""The quality gate of a delivery: validate each of its staged raw tables before anything is published.

Cross-table expectations (orphan claims, orphan stay details…) need the
related dataset: it is taken from the same delivery and from every delivery
already published, so a provider may send pharmacy detail after its claims.
A related dataset nobody has delivered yet leaves the expectation "not
evaluated", reported but not failed. All tables of a delivery are validated
together, with one GX context (see ``validation``).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from hdh_pipelines.quality.suites import build_suite
from hdh_pipelines.quality.validation import DuckDBSettings, RawTable, ValidationReport, validate_tables
from hdh_pipelines.registry import DatasetRegistry


def _related_datasets(suite) -> set[str]:
    return {name for e in suite.expectations for name in e.meta.get("related", [])}


def staged_tables(staged_raw: Path) -> dict[str, list[Path]]:
    """Dataset -> its Parquet files, in a delivery's raw folder (``<DATASET>/*.parquet``)."""
    return {
        folder.name: sorted(folder.glob("*.parquet"))
        for folder in sorted(staged_raw.iterdir())
        if folder.is_dir()
    }


def validate_delivery(
    staged_raw: Path,
    registry: DatasetRegistry,
    *,
    published_root: Path,
    docs_dir: Path | None = None,
    settings: DuckDBSettings | None = None,
    as_of: date | None = None,
) -> dict[str, ValidationReport]:
    """Validate every table of a staged delivery; dataset -> report (``success`` False blocks it)."""
    tables = staged_tables(staged_raw)
    schemas = {dataset: registry.resolve(dataset) for dataset in tables}
    raw_tables = [RawTable(schemas[d], files, build_suite(schemas[d])) for d, files in tables.items()]
    needed = sorted(set().union(*(_related_datasets(t.suite) for t in raw_tables)))
    related = {
        name: files_of
        for name in needed
        if (files_of := tables.get(name, []) + sorted(published_root.glob(f"*/*/{name}/*.parquet")))
    }
    return validate_tables(raw_tables, related=related, docs_dir=docs_dir, settings=settings, as_of=as_of)
