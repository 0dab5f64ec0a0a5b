"""The warehouse dbt builds, read the same way whatever engine built it.

dbt writes the models either into one DuckDB file (engine ``duckdb``, the
default) or, on Spark (engine ``spark``, ``HDH_WAREHOUSE_ENGINE``), as Parquet
tables under a warehouse folder, one folder per schema and table
(``<folder>/marts.db/claims/``, partition folders inside for the monthly
models). The stages after normalisation (workspaces, open data, catalogue
statistics, checks) read through :class:`Warehouse`: a read-only DuckDB
connection in which every model is ``<schema>.<table>`` either way, or a
table as Arrow. Spark's tables are DuckDB views over their Parquet files, so
the readers' SQL does not change with the engine.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Literal, Protocol

import duckdb
import pyarrow as pa

WarehouseEngine = Literal["duckdb", "spark"]
WAREHOUSE_ENGINES: tuple[WarehouseEngine, ...] = ("duckdb", "spark")

# A relation is <schema>.<table>, both plain identifiers (dbt's model names).
_RELATION = re.compile(r"([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)")


def split_relation(relation: str) -> tuple[str, str]:
    """``schema.table`` as its two parts; anything else is refused before it reaches SQL."""
    match = _RELATION.fullmatch(relation)
    if match is None:
        raise ValueError(f"A warehouse relation is <schema>.<table> in lower-case identifiers: {relation!r}.")
    return match.group(1), match.group(2)


class Warehouse(Protocol):
    """What the stages after normalisation may do with the warehouse: read."""

    engine: WarehouseEngine

    def read_only(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A read-only DuckDB connection holding every model as ``<schema>.<table>``."""
        ...

    def read_table(self, relation: str) -> pa.Table:
        """One model's rows as Arrow."""
        ...

    def relation_path(self, relation: str) -> Path:
        """The file (DuckDB) or folder (Spark's Parquet table) that holds the model."""
        ...


def _read_table(warehouse: Warehouse, relation: str) -> pa.Table:
    schema, table = split_relation(relation)
    with warehouse.read_only() as connection:
        return connection.sql(f'select * from "{schema}"."{table}"').to_arrow_table()


class DuckDBWarehouse:
    """The DuckDB file dbt-duckdb writes (HDH_WAREHOUSE_PATH)."""

    engine: WarehouseEngine = "duckdb"

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def read_only(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Closed, and the file's lock released, on exit: dbt needs the file to itself."""
        connection = duckdb.connect(str(self.path), read_only=True)
        try:
            yield connection
        finally:
            connection.close()

    def read_table(self, relation: str) -> pa.Table:
        return _read_table(self, relation)

    def relation_path(self, relation: str) -> Path:
        split_relation(relation)
        return self.path


class SparkParquetWarehouse:
    """The Parquet tables dbt-spark writes under spark.sql.warehouse.dir (HDH_SPARK_WAREHOUSE_DIR)."""

    engine: WarehouseEngine = "spark"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def relation_path(self, relation: str) -> Path:
        schema, table = split_relation(relation)
        return self.folder / f"{schema}.db" / table

    def relations(self) -> list[str]:
        """Every table of the warehouse folder that holds data files, as ``schema.table``."""
        return sorted(
            f"{schema_folder.name.removesuffix('.db')}.{table_folder.name}"
            for schema_folder in self.folder.glob("*.db")
            for table_folder in schema_folder.iterdir()
            if _RELATION.fullmatch(f"{schema_folder.name.removesuffix('.db')}.{table_folder.name}")
            and next(table_folder.rglob("*.parquet"), None) is not None
        )

    @contextmanager
    def read_only(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB with one view per table over its Parquet files; partition folders
        (``column=value``) come back as columns. A table Spark wrote no file for (a partitioned
        table without rows) is absent."""
        connection = duckdb.connect()
        try:
            for relation in self.relations():
                schema, table = split_relation(relation)
                files = str(self.relation_path(relation) / "**" / "*.parquet").replace("'", "''")
                connection.execute(f'create schema if not exists "{schema}"')
                connection.execute(
                    f'create view "{schema}"."{table}" as select * from '
                    f"read_parquet('{files}', hive_partitioning = true, union_by_name = true)"
                )
            yield connection
        finally:
            connection.close()

    def read_table(self, relation: str) -> pa.Table:
        return _read_table(self, relation)


def open_warehouse(engine: str, duckdb_path: Path, spark_folder: Path | None) -> Warehouse:
    """The warehouse of the configured engine (HDH_WAREHOUSE_ENGINE), with a reason when misconfigured."""
    if engine == "duckdb":
        return DuckDBWarehouse(duckdb_path)
    if engine == "spark":
        if spark_folder is None:
            raise ValueError(
                "HDH_WAREHOUSE_ENGINE=spark needs HDH_SPARK_WAREHOUSE_DIR, the folder of dbt-spark's tables."
            )
        return SparkParquetWarehouse(spark_folder)
    raise ValueError(f"HDH_WAREHOUSE_ENGINE is {engine!r}; it must be one of {', '.join(WAREHOUSE_ENGINES)}.")
