"""Quality gates for raw tables: Great Expectations suites run as DuckDB SQL over the Parquet files.

A pure core and its Dagster shell (``checks``): ``build_suite`` makes a dataset's suite from the
registry's Table Schema and ``expectations/<DATASET>.json``; ``validate_table``
runs it over a raw table and returns a ``ValidationReport``. See docs/quality.md.
"""

from hdh_pipelines.quality.suites import SuiteError, build_suite
from hdh_pipelines.quality.validation import (
    DuckDBSettings,
    ExpectationOutcome,
    ValidationReport,
    validate_table,
)

__all__ = [
    "DuckDBSettings",
    "ExpectationOutcome",
    "SuiteError",
    "ValidationReport",
    "build_suite",
    "validate_table",
]
