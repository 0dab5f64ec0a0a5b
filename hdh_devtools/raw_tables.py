"""Raw tables for benchmarks: a generator's SELECT widened to the registry's current columns.

Generators name the columns their workload needs; every other column the registry declares
for the dataset is added as NULL (undelivered), so a benchmark keeps running as the registry grows.
"""

from __future__ import annotations

import duckdb

from hdh_pipelines.core.sql import quote_identifier
from hdh_pipelines.registry import default_registry


def registry_columns_select(connection: duckdb.DuckDBPyConnection, dataset: str, select: str) -> str:
    """``select`` with the registry's columns of ``dataset`` in registry order, absent ones NULL."""
    schema = default_registry().resolve(dataset)
    if schema is None:
        raise ValueError(f"{dataset} is not a registered dataset.")
    produced = {row[0] for row in connection.execute(f"DESCRIBE {select}").fetchall()}
    unknown = produced - set(schema.column_names)
    if unknown:
        raise ValueError(f"The generator of {dataset} writes columns the registry lacks: {sorted(unknown)}.")
    columns = ", ".join(
        quote_identifier(name) if name in produced else f"NULL::VARCHAR AS {quote_identifier(name)}"
        for name in schema.column_names
    )
    return f"SELECT {columns} FROM ({select})"
