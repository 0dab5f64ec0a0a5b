"""The warehouse dbt builds, read the same way whatever engine built it.

dbt writes the models either into one DuckDB file (engine ``duckdb``, the
default) or, on Spark (engine ``spark``, ``HDH_WAREHOUSE_ENGINE``), as Parquet
tables under a warehouse folder, one folder per schema and table
(``<folder>/marts.db/claims/``, partition folders inside for the monthly
models). The stages after normalisation (workspaces, open data, catalogue
statistics, rights, linkage staging, checks) read through :class:`Warehouse`:
a read-only DuckDB connection in which every model is ``<schema>.<table>``
either way, the models attached read-only as ``<alias>.<schema>.<table>`` to a
reader's own DuckDB session (its memory cap, spill folder and functions), a
table as Arrow, and the state (engine, name, time of the last write) a reader
records. Spark's tables are DuckDB views over their Parquet files, so the
readers' SQL does not change with the engine.

Two more things, for the linkage (the one stage whose own Spark job reads the
marts and whose outputs readers find beside them): a Spark table pinned to the
data files a reader saw (:class:`PinnedTable`), so that a job running later
reads exactly those and can tell whether dbt rewrote them meanwhile; and
``publish_views``, views over Parquet a stage wrote itself, switched together
(the DuckDB file's views; on Spark a ``_views.json`` per schema that the
readers' DuckDB views follow).

Why DuckDB over Spark's files rather than a Spark session for the readers:
what they produce is small (one project's extract, aggregates, one
person's lookup) and their SQL, with its HMAC functions, is DuckDB's; a Spark
session would cost seconds to start and a second dialect of every reader.
DuckDB reads only the row groups and partitions a query needs, on one machine;
readers never write the engine's tables (dbt does, on either engine).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import duckdb
import pyarrow as pa

from hdh_pipelines.core.private_files import make_private_dir, write_private_file
from hdh_pipelines.core.sql import quote_identifier, quote_literal

WarehouseEngine = Literal["duckdb", "spark"]
WAREHOUSE_ENGINES: tuple[WarehouseEngine, ...] = ("duckdb", "spark")

# A relation is <schema>.<table>, both plain identifiers (dbt's model names).
_RELATION = re.compile(r"([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)")
# On Spark, the views a stage published over its own Parquet (linkage outputs), per schema folder.
PUBLISHED_VIEWS_FILE = "_views.json"


def split_relation(relation: str) -> tuple[str, str]:
    """``schema.table`` as its two parts; anything else is refused before it reaches SQL."""
    match = _RELATION.fullmatch(relation)
    if match is None:
        raise ValueError(f"A warehouse relation is <schema>.<table> in lower-case identifiers: {relation!r}.")
    return match.group(1), match.group(2)


def has_relation(connection: duckdb.DuckDBPyConnection, alias: str, relation: str) -> bool:
    """True when the warehouse attached as ``alias`` holds ``relation`` (DuckDB: a table; Spark: a view)."""
    schema, _, table = relation.partition(".")
    return bool(
        connection.execute(
            "select count(*) from information_schema.tables "
            "where table_catalog = ? and table_schema = ? and table_name = ?",
            [alias, schema, table],
        ).fetchone()[0]
    )


@dataclass(frozen=True)
class WarehouseState:
    """What a reader records of the warehouse it read: the engine, the file or folder's name, the time of
    its last write (no path: copies of this record leave the private area)."""

    engine: WarehouseEngine
    name: str
    modified_at: datetime


@dataclass(frozen=True)
class PinnedFile:
    path: str
    size: int
    modified_ns: int


@dataclass(frozen=True)
class PinnedTable:
    """A Spark table as a reader found it: its folder and data files with their size and last write.

    Parquet tables keep no versions to travel back to, and dbt's monthly
    ``insert_overwrite`` replaces a partition's files: a job that reads exactly
    these files, and checks with :meth:`changed` once it has read them, read
    one consistent state of the table or knows it did not.
    """

    relation: str
    folder: str
    files: tuple[PinnedFile, ...]

    def changed(self) -> bool:
        """True when a pinned file is gone or was rewritten (files added since are not read, so harmless)."""
        for pinned in self.files:
            try:
                found = os.stat(pinned.path)
            except FileNotFoundError:
                return True
            if (found.st_size, found.st_mtime_ns) != (pinned.size, pinned.modified_ns):
                return True
        return False


class Warehouse(Protocol):
    """What the stages after normalisation may do with the warehouse: read."""

    engine: WarehouseEngine

    def read_only(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A read-only DuckDB connection holding every model as ``<schema>.<table>``."""
        ...

    def attach(self, connection: duckdb.DuckDBPyConnection, alias: str) -> None:
        """Every model readable, not writable, as ``<alias>.<schema>.<table>`` in the caller's connection."""
        ...

    def exists(self) -> bool:
        """False before the first build."""
        ...

    def state(self) -> WarehouseState:
        """The engine, name and last write of the warehouse (it must exist)."""
        ...

    def read_table(self, relation: str) -> pa.Table:
        """One model's rows as Arrow."""
        ...

    def relation_path(self, relation: str) -> Path:
        """The file (DuckDB) or folder (Spark's Parquet table) that holds the model."""
        ...

    def publish_views(self, schema: str, views: Mapping[str, str]) -> None:
        """Make ``<schema>.<name>`` a view over each Parquet glob, all switched at once (replacing the
        schema's earlier views): a stage's own outputs (linkage), never a dbt model."""
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

    def attach(self, connection: duckdb.DuckDBPyConnection, alias: str) -> None:
        """Raises ``duckdb.Error`` when the file is missing or dbt holds it."""
        connection.execute(f"attach {quote_literal(str(self.path))} as {quote_identifier(alias)} (read_only)")

    def exists(self) -> bool:
        return self.path.is_file()

    def state(self) -> WarehouseState:
        modified_at = datetime.fromtimestamp(self.path.stat().st_mtime, UTC)
        return WarehouseState(self.engine, self.path.name, modified_at)

    def read_table(self, relation: str) -> pa.Table:
        return _read_table(self, relation)

    def relation_path(self, relation: str) -> Path:
        split_relation(relation)
        return self.path

    def publish_views(self, schema: str, views: Mapping[str, str]) -> None:
        """In one transaction: readers see every view of the previous publication or every new one."""
        with duckdb.connect(str(self.path)) as connection:
            connection.execute("begin transaction")
            connection.execute(f"create schema if not exists {quote_identifier(schema)}")
            for name, files in views.items():
                split_relation(f"{schema}.{name}")
                connection.execute(
                    f"create or replace view {quote_identifier(schema)}.{quote_identifier(name)} as "
                    f"select * from read_parquet({quote_literal(files)})"
                )
            connection.execute("commit")


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

    def _create_views(self, connection: duckdb.DuckDBPyConnection, catalog: str) -> None:
        """One view per table over its Parquet files; partition folders (``column=value``) come back as
        columns. A table Spark wrote no file for (a partitioned table without rows) is absent."""
        for relation in self.relations():
            schema, table = split_relation(relation)
            files = str(self.relation_path(relation) / "**" / "*.parquet")
            qualified_schema = f"{quote_identifier(catalog)}.{quote_identifier(schema)}"
            connection.execute(f"create schema if not exists {qualified_schema}")
            connection.execute(
                f"create view {qualified_schema}.{quote_identifier(table)} as select * from "
                f"read_parquet({quote_literal(files)}, hive_partitioning = true, union_by_name = true)"
            )
        for views_file in self.folder.glob(f"*.db/{PUBLISHED_VIEWS_FILE}"):
            qualified_schema = f"{quote_identifier(catalog)}.{quote_identifier(views_file.parent.stem)}"
            connection.execute(f"create schema if not exists {qualified_schema}")
            for name, files in json.loads(views_file.read_text(encoding="utf-8")).items():
                connection.execute(
                    f"create view {qualified_schema}.{quote_identifier(name)} as "
                    f"select * from read_parquet({quote_literal(files)})"
                )

    def pin(self, relation: str) -> PinnedTable:
        """The table's data files now (Spark's ``_``/``.`` files, such as a write in progress, left out)."""
        folder = self.relation_path(relation)
        files = tuple(
            PinnedFile(str(path), found.st_size, found.st_mtime_ns)
            for path in sorted(folder.rglob("*.parquet"))
            if not any(part.startswith(("_", ".")) for part in path.relative_to(folder).parts)
            for found in (path.stat(),)
        )
        return PinnedTable(relation, str(folder), files)

    def publish_views(self, schema: str, views: Mapping[str, str]) -> None:
        """One owner-only file per schema, replaced by a rename: readers see the old views or the new."""
        for name in views:
            split_relation(f"{schema}.{name}")
        folder = make_private_dir(self.folder / f"{schema}.db")
        write_private_file(folder / PUBLISHED_VIEWS_FILE, json.dumps(dict(views), sort_keys=True).encode())

    @contextmanager
    def read_only(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB holding the views: reading them never writes Spark's files."""
        connection = duckdb.connect()
        try:
            self._create_views(connection, "memory")
            yield connection
        finally:
            connection.close()

    def attach(self, connection: duckdb.DuckDBPyConnection, alias: str) -> None:
        """An in-memory catalogue ``alias`` of views over the Parquet files; raises ``duckdb.Error`` when the
        folder holds no table (nothing built yet), as attaching a missing DuckDB file does."""
        if not self.relations():
            raise duckdb.IOException("The Spark warehouse folder holds no table yet.")
        connection.execute(f"attach ':memory:' as {quote_identifier(alias)}")
        self._create_views(connection, alias)

    def exists(self) -> bool:
        return self.folder.is_dir() and bool(self.relations())

    def state(self) -> WarehouseState:
        """The last write is the newest table or partition folder: Spark replaces a table's or a partition's
        folder whenever it rewrites it."""
        folders = [self.folder, *self.folder.glob("*.db/*"), *self.folder.glob("*.db/*/*=*")]
        latest = max(folder.stat().st_mtime for folder in folders)
        return WarehouseState(self.engine, self.folder.name, datetime.fromtimestamp(latest, UTC))

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
