"""Great Expectations, imported once, made private and able to run on DuckDB.

Import GX from here, never directly, so that these two things hold before any use:

1. Nothing phones home. ``GX_ANALYTICS_ENABLED`` is forced to ``False`` before
   the import (an inherited ``True`` must not opt a health-data platform in);
   contexts are ephemeral and built by ``ephemeral_context``, with analytics
   and progress bars off. GX 1.24 ships no analytics client and never calls
   its PyPI version checker; DuckDB's extension auto-install, the other
   outbound path, is turned off where connections are configured.
2. GX's SQL engine works on DuckDB. GX runs a query inside
   ``with engine.connect()`` and fetches the rows after the block has closed
   the connection; closing rolls back SQLAlchemy's transaction, and a DuckDB
   connection holds one pending result, which the rollback discards: every
   metric fails with "list index out of range". GX already keeps one
   connection open for the whole validation for the dialects that need it
   (SQLite, SQL Server…); DuckDB is added to that list. This touches a private
   name, so ``_enable_duckdb`` fails loudly if a GX upgrade removes it.
"""

from __future__ import annotations

import enum
import os

os.environ["GX_ANALYTICS_ENABLED"] = "False"

import great_expectations as gx
import great_expectations.execution_engine.sqlalchemy_execution_engine as _sql_engine
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.expectations.expectation import Expectation
from great_expectations.expectations.expectation_configuration import (
    ExpectationConfiguration,
)

__all__ = ["Expectation", "ExpectationConfiguration", "ephemeral_context", "gx"]


class _DuckDBDialect(enum.StrEnum):
    # GX compares dialect names as strings and reads ``.value`` (GXSqlDialect has no DuckDB member).
    DUCKDB = "duckdb"


def _enable_duckdb() -> None:
    persisted = getattr(_sql_engine, "_PERSISTED_CONNECTION_DIALECTS", None)
    if not isinstance(persisted, tuple):
        raise RuntimeError(
            f"great_expectations {gx.__version__} no longer has _PERSISTED_CONNECTION_DIALECTS: "
            "re-check how it runs SQL on DuckDB (see docs/quality.md)."
        )
    if _DuckDBDialect.DUCKDB not in persisted:
        _sql_engine._PERSISTED_CONNECTION_DIALECTS = (*persisted, _DuckDBDialect.DUCKDB)


_enable_duckdb()


def ephemeral_context() -> gx.data_context.AbstractDataContext:
    """An in-memory GX context: nothing written to disk, no analytics, no progress bars, no Data Docs site.

    Configured at construction: ``enable_analytics`` and setting ``variables``
    afterwards each re-serialise the project configuration, and GX's default
    ephemeral configuration declares a temporary Data Docs site we never build.
    """
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)
