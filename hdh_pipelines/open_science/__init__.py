"""Open-science services: on-demand indicators, open data and data-challenge exports, disclosure-controlled.

A pure core: ``disclosure`` hides sensitive values and enough
complements that no hidden value can be narrowed, ``indicators`` turns a
request into a count table in DuckDB SQL,
``publish`` writes protected tables and the request log, ``challenge`` writes
pseudonymised train/test extracts, ``synthetic`` generates a synthetic SNDS
from the registry. The Dagster shell is ``assets`` and ``resources``; docs/open_science.md explains the rules.
"""

from hdh_pipelines.open_science.challenge import (
    CHALLENGE_MARTS,
    ChallengeExport,
    export_challenge,
    load_challenge_key,
)
from hdh_pipelines.open_science.disclosure import TOTAL, ProtectedTable, protect_counts
from hdh_pipelines.open_science.errors import OpenDataRefused
from hdh_pipelines.open_science.indicators import ALGORITHMS, IndicatorSpec, compute_indicator
from hdh_pipelines.open_science.publish import (
    OPEN_DISPENSATIONS,
    IndicatorResult,
    build_open_dispensations,
    markdown_table,
    publish_open_dispensations,
    read_log,
    run_indicator,
)

__all__ = [
    "ALGORITHMS",
    "CHALLENGE_MARTS",
    "OPEN_DISPENSATIONS",
    "TOTAL",
    "ChallengeExport",
    "IndicatorResult",
    "IndicatorSpec",
    "OpenDataRefused",
    "ProtectedTable",
    "build_open_dispensations",
    "compute_indicator",
    "export_challenge",
    "load_challenge_key",
    "markdown_table",
    "protect_counts",
    "publish_open_dispensations",
    "read_log",
    "run_indicator",
]
