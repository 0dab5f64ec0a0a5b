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
readers' DuckDB views follow). These two go through the warehouse folder's file
system (``pyarrow.fs``), so the linkage works with a Spark warehouse in a folder,
``s3a://`` or ``abfss://``; the DuckDB views need a local or mounted folder.

Why DuckDB over Spark's files rather than a Spark session for the readers:
what they produce is small (one project's extract, aggregates, one
person's lookup) and their SQL, with its HMAC functions, is DuckDB's; a Spark
session would cost seconds to start and a second dialect of every reader.
DuckDB reads only the row groups and partitions a query needs, on one machine;
readers never write the engine's tables (dbt does, on either engine).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs

from hdh_pipelines.core.sql import quote_identifier, quote_literal
from hdh_pipelines.core.storage_location import StorageLocation, UnsupportedLocation

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
    """A data file as Spark reads it (its URI) and as the file system reported it."""

    uri: str
    size: int
    modified_ns: int


@dataclass(frozen=True)
class PinnedTable:
    """A Spark table as a reader found it: its folder's URI and its data files with their size and last
    write (whatever store holds them: a local folder, S3, ADLS).

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
        filesystem, folder = StorageLocation.parse(self.folder).filesystem()
        found = filesystem.get_file_info(
            [folder + pinned.uri.removeprefix(self.folder) for pinned in self.files]
        )
        return any(
            info.type != pafs.FileType.File or (info.size, info.mtime_ns) != (pinned.size, pinned.modified_ns)
            for pinned, info in zip(self.files, found, strict=True)
        )


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
    """The Parquet tables dbt-spark writes under spark.sql.warehouse.dir (HDH_SPARK_WAREHOUSE_DIR): a local
    or mounted folder (a path or ``file://`` URI), or an ``s3a://`` or ``abfss://`` prefix.

    Finding a table's files, pinning them, ``exists``, ``state`` and ``publish_views`` go through the
    location's file system, so they work on each of these, and so does the linkage, which reads the pinned
    files on Spark. The DuckDB views (``read_only``, ``attach``: the workspaces, open data and the other
    readers) need a local or mounted folder: DuckDB reading object storage needs its extensions and a
    secret set up in each reader's session, which the readers do not do.
    """

    engine: WarehouseEngine = "spark"

    def __init__(self, location: str | Path) -> None:
        """Raises ``UnsupportedLocation`` (a ``ValueError``) for a location Spark is not set up for."""
        self.location = StorageLocation.parse(str(location))

    def relation_uri(self, relation: str) -> str:
        """The URI of the table's folder, as Spark reads it."""
        return self.location.spark_uri(*_table_parts(relation))

    def _data_files(self, *parts: str) -> list[tuple[str, pafs.FileInfo]]:
        """The Parquet data files below ``parts`` (path relative to it, file info), sorted; Spark's ``_`` and
        ``.`` files and folders (such as a write in progress) left out."""
        _, folder = self.location.filesystem(*parts)
        return sorted(
            (relative, info)
            for info in self.location.listing(*parts, recursive=True)
            if info.type == pafs.FileType.File and info.path.endswith(".parquet")
            for relative in (info.path.removeprefix(folder + "/"),)
            if not any(part.startswith(("_", ".")) for part in relative.split("/"))
        )

    def _schema_folders(self) -> list[str]:
        return sorted(
            info.base_name
            for info in self.location.listing()
            if info.type == pafs.FileType.Directory and info.base_name.endswith(".db")
        )

    def relations(self) -> list[str]:
        """Every table of the warehouse that holds data files, as ``schema.table``."""
        return sorted(
            {
                relation
                for schema_folder in self._schema_folders()
                for relative, _ in self._data_files(schema_folder)
                for relation in (f"{schema_folder.removesuffix('.db')}.{relative.split('/')[0]}",)
                if "/" in relative and _RELATION.fullmatch(relation)
            }
        )

    def _require_local(self) -> None:
        if self.location.local is None:
            raise UnsupportedLocation(
                f"The warehouse's DuckDB readers need a local or mounted folder; {self.location.uri} is in "
                "object storage (docs/normalisation.md, Engines)."
            )

    def _create_views(self, connection: duckdb.DuckDBPyConnection, catalog: str) -> None:
        """One view per table over its Parquet files; partition folders (``column=value``) come back as
        columns. A table Spark wrote no file for (a partitioned table without rows) is absent."""
        for relation in self.relations():
            schema, table = split_relation(relation)
            files = self.location.duckdb_uri(*_table_parts(relation), "**", "*.parquet")
            qualified_schema = f"{quote_identifier(catalog)}.{quote_identifier(schema)}"
            connection.execute(f"create schema if not exists {qualified_schema}")
            connection.execute(
                f"create view {qualified_schema}.{quote_identifier(table)} as select * from "
                f"read_parquet({quote_literal(files)}, hive_partitioning = true, union_by_name = true)"
            )
        for schema_folder in self._schema_folders():
            published = self.location.read(schema_folder, PUBLISHED_VIEWS_FILE)
            if published is None:
                continue
            qualified_schema = (
                f"{quote_identifier(catalog)}.{quote_identifier(schema_folder.removesuffix('.db'))}"
            )
            connection.execute(f"create schema if not exists {qualified_schema}")
            for name, files in json.loads(published).items():
                connection.execute(
                    f"create view {qualified_schema}.{quote_identifier(name)} as "
                    f"select * from read_parquet({quote_literal(files)})"
                )

    def pin(self, relation: str) -> PinnedTable:
        """The table's data files now, as Spark will read them, with the size and last write the file system
        reports (no file: the table is absent, or a partitioned table without rows)."""
        parts = _table_parts(relation)
        files = tuple(
            PinnedFile(self.location.spark_uri(*parts, relative), info.size, info.mtime_ns)
            for relative, info in self._data_files(*parts)
        )
        return PinnedTable(relation, self.relation_uri(relation), files)

    def publish_views(self, schema: str, views: Mapping[str, str]) -> None:
        """One file per schema, replaced at once (locally owner-only, by a rename; one PUT on object
        storage): readers see the old views or the new."""
        for name in views:
            split_relation(f"{schema}.{name}")
        self.location.write(
            json.dumps(dict(views), sort_keys=True).encode(), f"{schema}.db", PUBLISHED_VIEWS_FILE
        )

    @contextmanager
    def read_only(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB holding the views: reading them never writes Spark's files."""
        self._require_local()
        connection = duckdb.connect()
        try:
            self._create_views(connection, "memory")
            yield connection
        finally:
            connection.close()

    def attach(self, connection: duckdb.DuckDBPyConnection, alias: str) -> None:
        """An in-memory catalogue ``alias`` of views over the Parquet files; raises ``duckdb.Error`` when the
        folder holds no table (nothing built yet), as attaching a missing DuckDB file does."""
        self._require_local()
        if not self.relations():
            raise duckdb.IOException("The Spark warehouse folder holds no table yet.")
        connection.execute(f"attach ':memory:' as {quote_identifier(alias)}")
        self._create_views(connection, alias)

    def exists(self) -> bool:
        return bool(self.relations())

    def state(self) -> WarehouseState:
        """The last write is the newest of the folder and what its schema folders hold: Spark replaces a
        table's or a partition's folder (and its files) whenever it rewrites it. Object stores report no
        time for a folder: there, the newest file."""
        filesystem, root = self.location.filesystem()
        entries = [
            filesystem.get_file_info(root),
            *(
                info
                for schema in self._schema_folders()
                for info in self.location.listing(schema, recursive=True)
            ),
        ]
        latest = max(info.mtime_ns for info in entries if info.mtime_ns is not None)
        local = self.location.local
        name = local.name if local is not None else self.location.uri.rsplit("/", 1)[1]
        return WarehouseState(self.engine, name, datetime.fromtimestamp(latest / 1e9, UTC))

    def read_table(self, relation: str) -> pa.Table:
        return _read_table(self, relation)


def _table_parts(relation: str) -> tuple[str, str]:
    """A table's folder below the warehouse folder: ``<schema>.db/<table>``."""
    schema, table = split_relation(relation)
    return f"{schema}.db", table


def open_warehouse(engine: str, duckdb_path: Path, spark_location: str | None) -> Warehouse:
    """The warehouse of the configured engine (HDH_WAREHOUSE_ENGINE), with a reason when misconfigured."""
    if engine == "duckdb":
        return DuckDBWarehouse(duckdb_path)
    if engine == "spark":
        if spark_location is None:
            raise ValueError(
                "HDH_WAREHOUSE_ENGINE=spark needs HDH_SPARK_WAREHOUSE_DIR, the folder of dbt-spark's tables."
            )
        try:
            return SparkParquetWarehouse(spark_location)
        except UnsupportedLocation as why:
            raise ValueError(
                f"HDH_SPARK_WAREHOUSE_DIR {spark_location!r} {why}; give a local or mounted folder, an "
                "s3a://bucket/prefix or an abfss://container@account.dfs.core.windows.net/prefix URI."
            ) from None
    raise ValueError(f"HDH_WAREHOUSE_ENGINE is {engine!r}; it must be one of {', '.join(WAREHOUSE_ENGINES)}.")
