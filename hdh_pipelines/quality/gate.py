"""The quality gate of a delivery: validate each of its staged raw tables before anything is published.

Cross-table expectations (orphan claims, orphan stay details…) need the
related dataset: it is taken from the same delivery and from every delivery
already published, so a provider may send pharmacy detail after its claims.
A related dataset nobody has delivered yet leaves the expectation "not
evaluated", reported but not failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path

from hdh_pipelines.quality.suites import build_suite
from hdh_pipelines.quality.validation import DuckDBSettings, ValidationReport, validate_table
from hdh_pipelines.registry import DatasetRegistry


def _related_datasets(suite) -> set[str]:
    return {name for e in suite.expectations for name in e.configuration.meta.get("related", [])}


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
    reports = {}
    for dataset, files in tables.items():
        schema = registry.resolve(dataset)
        suite = build_suite(schema)
        related: Mapping[str, list[Path]] = {
            name: files_of
            for name in sorted(_related_datasets(suite))
            if (files_of := tables.get(name, []) + sorted(published_root.glob(f"*/*/{name}/*.parquet")))
        }
        reports[dataset] = validate_table(
            schema, files, related=related, docs_dir=docs_dir, suite=suite, settings=settings, as_of=as_of
        )
    return reports
