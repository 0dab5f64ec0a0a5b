"""Quality gates for raw tables: Great Expectations suites run as DuckDB SQL over the Parquet files.

A pure core and its Dagster shell (``checks``): ``build_suite`` makes a dataset's suite from the
registry's Table Schema and ``expectations/<DATASET>.json``; ``validate_table``
runs it over a raw table and returns a ``ValidationReport``; ``validate_tables`` runs many
tables with one GX context. See docs/quality.md.
"""

from hdh_pipelines.quality.suites import SuiteError, build_suite
from hdh_pipelines.quality.validation import (
    DuckDBSettings,
    ExpectationOutcome,
    RawTable,
    ValidationReport,
    validate_table,
    validate_tables,
)

__all__ = [
    "DuckDBSettings",
    "ExpectationOutcome",
    "RawTable",
    "SuiteError",
    "ValidationReport",
    "build_suite",
    "validate_table",
    "validate_tables",
]
