"""Where the linkage reads and writes: Parquet under a linkage root, published to the warehouse as views.

The inputs are read through the warehouse interface, one query each. On the
DuckDB engine, Spark executors on a cluster cannot open the driver's DuckDB
file, so the inputs are first copied out of the warehouse as Parquet under the
linkage root (a folder every executor sees: local for ``local[*]``, a shared
mount for ``spark://`` or Kubernetes, or object storage). On the Spark engine
nothing is copied: the tables the queries read are pinned to their current
files (``PinnedInputs``, their URIs wherever the warehouse is: a folder,
``s3a://``, ``abfss://``), which the Spark job reads in place with the same
queries. Layout::

    <root>/inputs/<version>/{pseudonyms,persons,cohort}.parquet    (DuckDB engine)
    <root>/inputs/<version>/pinned.json                             (Spark engine)
    <root>/outputs/<version>/{links,unlinked,ambiguous}/part-*.parquet
    <root>/outputs/<version>/summary.json

A version folder is complete before anyone reads it: Spark's commit protocol
writes under ``_temporary`` and moves files in at the end, and the warehouse
views (``linkage.links``, ``linkage.unlinked``, ``linkage.ambiguous``) are
switched to the new version all at once (``Warehouse.publish_views``), so readers see the
three tables of the same run or of the previous one, never a mix or a part.
Versions no view points to (older runs, failed runs) are removed by the next
publication. Folders are owner-only (0700) and files 0600: they hold
row-level pseudonymised data.

Opt-outs: staging sets aside every cohort record whose pseudonym belongs to
an opted-out person (``intermediate.int_opt_out_exclusions``), so it is
never compared with anyone, and stages no pseudonym of theirs;
``purge_outputs`` removes from the published outputs the persons and
records of opt-outs registered since the run, as a new version published
the same way (docs/linkage.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import sqlglot
from pyspark.sql import DataFrame, SparkSession
from sqlglot import exp

from hdh_pipelines.core.private_files import (
    PRIVATE_FILE_MODE,
    make_private_dir,
    make_tree_owner_only,
)
from hdh_pipelines.core.storage_location import StorageLocation, UnsupportedLocation
from hdh_pipelines.normalisation.warehouse import (
    PinnedTable,
    SparkParquetWarehouse,
    Warehouse,
    split_relation,
)
from hdh_pipelines.rights.opt_out import (
    EXCLUSIONS_TABLE,
    OPT_OUT_STAGING_TABLE,
    PurgeOutcome,
    excluded_persons_sql,
    excluded_pseudonyms_sql,
    opt_out_version,
)

OUTPUT_TABLES = ("links", "unlinked", "ambiguous")
WAREHOUSE_SCHEMA = "linkage"
INPUT_QUERIES = {
    "pseudonyms": "SELECT ben_nir_psa, ben_rng_gem, ben_idt_ano FROM intermediate.int_pseudonym_persons",
    "persons": "SELECT ben_idt_ano, sex_code, birth_year, birth_month, death_date, residence_departement, "
    "residence_commune FROM marts.persons",
    "cohort": "SELECT hdh_provider, coh_rec_id, ben_nir_psa, nai_ann, nai_moi, sex_cod, res_dpt, res_com, "
    "inc_dte, dcd_dte FROM staging.stg_cohort_ext",
}
# Set aside before linkage: a record under an opted-out person's pseudonym is never compared with
# anyone (its quasi-identifiers could match another person), and their pseudonyms are not staged.
# Anti joins, not NOT IN: a record without a pseudonym is kept.
OPT_OUT_FILTERS = {
    "pseudonyms": f"ANTI JOIN ({excluded_persons_sql()}) AS excluded USING (ben_idt_ano)",
    "cohort": f"ANTI JOIN ({excluded_pseudonyms_sql()}) AS excluded "
    "ON excluded.psa = upper(trim(staged.ben_nir_psa))",
}


class LinkageStorageError(Exception):
    """A problem with the linkage root or the warehouse, with a machine-readable reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _opt_out_registry_missing() -> LinkageStorageError:
    return LinkageStorageError(
        "opt_out_registry_missing",
        f"The warehouse has no {EXCLUSIONS_TABLE}: the cohort is never linked without the opt-out "
        "registry applied; build the normalisation first.",
    )


def _require_opt_out_registry(connection: duckdb.DuckDBPyConnection, *, with_version: bool = False) -> None:
    """The exclusions must exist (and, to record its version, the registry's staging table)."""
    tables = [EXCLUSIONS_TABLE, *([OPT_OUT_STAGING_TABLE] if with_version else [])]
    try:
        connection.execute(f"SELECT 1 FROM {', '.join(tables)} LIMIT 0")
    except duckdb.CatalogException:
        raise _opt_out_registry_missing() from None


def _input_queries(truth_table: str | None) -> dict[str, str]:
    """Each input as one query over the warehouse, opt-outs set aside (and the truth table, if named)."""
    queries = {
        name: f"SELECT staged.* FROM ({query}) AS staged {OPT_OUT_FILTERS[name]}"
        if name in OPT_OUT_FILTERS
        else query
        for name, query in INPUT_QUERIES.items()
    }
    if truth_table:
        queries["truth"] = f"SELECT hdh_provider, coh_rec_id, true_ben_idt_ano FROM {truth_table}"
    return queries


def _checked_input_queries(connection: duckdb.DuckDBPyConnection, truth_table: str | None) -> dict[str, str]:
    """The input queries, once the warehouse holds the opt-out registry and every table they read."""
    _require_opt_out_registry(connection)
    queries = _input_queries(truth_table)
    try:
        for query in queries.values():
            connection.execute(f"DESCRIBE {query}")
    except duckdb.CatalogException as error:
        raise LinkageStorageError(
            "missing_input",
            f"A linkage input is missing from the warehouse (build the dbt models first): "
            f"{str(error).splitlines()[0]}",
        ) from error
    return queries


def _relations_of(query: str) -> set[str]:
    return {
        f"{table.db}.{table.name}" for table in sqlglot.parse_one(query, read="duckdb").find_all(exp.Table)
    }


def _view_name(relation: str) -> str:
    return "pinned__" + "__".join(split_relation(relation))


def _spark_sql(query: str) -> str:
    """The DuckDB-dialect input query in Spark's, each table a ``{pinned__schema__table}`` argument of
    ``SparkSession.sql``: one definition of the inputs for both engines."""
    tree = sqlglot.parse_one(query, read="duckdb")
    for table in tree.find_all(exp.Table):
        view = _view_name(f"{table.db}.{table.name}")
        table.set("db", None)
        table.set("this", exp.to_identifier(view))
    sql = tree.sql(dialect="spark")
    for relation in _relations_of(query):
        sql = sql.replace(_view_name(relation), "{" + _view_name(relation) + "}")
    return sql


@dataclass(frozen=True)
class PinnedInputs:
    """Spark engine: the input queries and the warehouse tables they read, pinned to their files."""

    tables: tuple[PinnedTable, ...]
    queries: dict[str, str]

    def read(self, spark: SparkSession) -> dict[str, DataFrame]:
        """The inputs in the Spark job, lazily: the pinned files only (partition folders as columns)."""
        tables = {
            _view_name(table.relation): spark.read.option("basePath", table.folder).parquet(
                *[pinned.uri for pinned in table.files]
            )
            for table in self.tables
        }
        return {name: spark.sql(_spark_sql(query), **tables) for name, query in self.queries.items()}

    def changed(self) -> list[str]:
        """The pinned tables dbt rewrote since they were pinned."""
        return [table.relation for table in self.tables if table.changed()]


def new_version() -> str:
    """Sortable by time (microseconds, so that a later run sorts later), unique across concurrent runs."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"


def _unsupported(uri: str, why: str) -> LinkageStorageError:
    return LinkageStorageError(
        "unsupported_root",
        f"The linkage root {uri!r} {why}; give a local or mounted folder, an s3a://bucket/prefix or an "
        "abfss://container@account.dfs.core.windows.net/prefix URI (see docs/linkage.md).",
    )


class LinkageRoot(StorageLocation):
    """Where staged inputs and outputs live: a local (or mounted) folder, or a prefix in object storage
    (``StorageLocation``: Spark's URI of the root, and the folder when it is one)."""

    @classmethod
    def from_uri(cls, uri: str) -> LinkageRoot:
        try:
            return cls.parse(uri)
        except UnsupportedLocation as why:
            raise _unsupported(uri, str(why)) from None

    def stage_inputs(
        self, warehouse: Warehouse, version: str, *, truth_table: str | None = None
    ) -> dict[str, str]:
        """DuckDB engine: copy the inputs (and a truth table, for tests and benchmarks) out of the warehouse
        as Parquet, since Spark executors cannot open the DuckDB file.

        Returns the name → part below the root (``inputs/<version>/<name>.parquet``) of each file.
        """
        folder = ("inputs", version)
        if self.local is not None:
            make_private_dir(self.local.joinpath(*folder))
        written = {}
        try:
            with warehouse.read_only() as connection:
                queries = _checked_input_queries(connection, truth_table)
                for name, query in queries.items():
                    parts = (*folder, f"{name}.parquet")
                    if self.local is None:
                        # Nobody reads a version's inputs but its own run: no rename needed.
                        connection.execute(f"COPY ({query}) TO '{self.duckdb_uri(*parts)}' (FORMAT parquet)")
                    else:
                        temporary = self.local.joinpath(*folder, f".{name}.{uuid.uuid4().hex}.tmp")
                        connection.execute(f"COPY ({query}) TO '{temporary}' (FORMAT parquet)")
                        os.chmod(temporary, PRIVATE_FILE_MODE)
                        os.replace(temporary, self.local.joinpath(*parts))
                    written[name] = "/".join(parts)
        except LinkageStorageError:
            self.remove(*folder)
            raise
        return written

    def pin_inputs(
        self, warehouse: SparkParquetWarehouse, version: str, *, truth_table: str | None = None
    ) -> PinnedInputs:
        """Spark engine: copy nothing; pin the tables the inputs read to their current data files.

        The link step's Spark job reads exactly these files (opt-outs set aside there, by the same
        queries), so a dbt run that rewrites a mart meanwhile cannot give it a mix of two states; the
        pin is recorded as ``inputs/<version>/pinned.json`` (relation, files, sizes, last writes). Only
        the warehouse's file system is read (no DuckDB view), so the warehouse may be in object storage;
        a table without data files is missing.
        """
        queries = _input_queries(truth_table)
        relations = sorted({relation for query in queries.values() for relation in _relations_of(query)})
        pinned = PinnedInputs(tuple(warehouse.pin(relation) for relation in relations), queries)
        missing = [table.relation for table in pinned.tables if not table.files]
        if EXCLUSIONS_TABLE in missing:
            raise _opt_out_registry_missing()
        if missing:
            raise LinkageStorageError(
                "missing_input",
                f"Linkage inputs are missing from the warehouse (build the dbt models first): {missing}",
            )
        self.write(
            json.dumps(dataclasses.asdict(pinned), indent=2, sort_keys=True).encode(),
            "inputs",
            version,
            "pinned.json",
        )
        return pinned

    def write_summary(self, version: str, summary: dict) -> None:
        self.write(
            json.dumps(summary, indent=2, sort_keys=True, default=str).encode(),
            "outputs",
            version,
            "summary.json",
        )

    def read_summary(self, version: str) -> dict:
        data = self.read("outputs", version, "summary.json")
        return json.loads(data) if data else {}

    def publish(self, warehouse: Warehouse, version: str) -> None:
        """Point the warehouse views at ``version`` (all at once), then drop the older versions.

        Spark runs outside the warehouse pool, so two runs may overlap: a run older than the published
        one is refused (``superseded``) rather than put back over newer outputs, and versions newer
        than ``version`` (runs still under way) are left alone.
        """
        current = self.current_version()
        if current is not None and current > version:
            self.discard(version)
            raise LinkageStorageError(
                "superseded",
                f"A newer linkage run ({current}) is already published; the outputs of run {version} "
                "were discarded.",
            )
        missing = [t for t in OUTPUT_TABLES if not self.exists("outputs", version, t, "_SUCCESS")]
        if missing:
            raise LinkageStorageError(
                "incomplete_output", f"Outputs {missing} of run {version} are incomplete."
            )
        if self.local is not None:
            make_tree_owner_only(self.local / "outputs" / version)
        warehouse.publish_views(
            WAREHOUSE_SCHEMA, {t: self.duckdb_uri("outputs", version, t, "*.parquet") for t in OUTPUT_TABLES}
        )
        self.write(version.encode(), "CURRENT")
        self.remove_versions_before(version)

    def discard(self, version: str) -> None:
        """Remove a run's inputs and outputs (a superseded run, or one whose inputs changed under it)."""
        self.remove("outputs", version)
        self.remove("inputs", version)

    def current_version(self) -> str | None:
        data = self.read("CURRENT")
        return data.decode().strip() if data else None

    def remove_versions_before(self, keep: str) -> None:
        """Remove every input and output version older than ``keep`` (failed runs' leftovers included)."""
        for kind in ("inputs", "outputs"):
            for version in sorted(info.base_name for info in self.listing(kind)):
                if version < keep:
                    self.remove(kind, version)

    def purge_outputs(self, warehouse: Warehouse) -> PurgeOutcome:
        """Remove opted-out persons and their cohort records from the published outputs.

        Links to an excluded person, and every row of a record under an
        excluded pseudonym, are dropped; an excluded person is taken out of
        an ambiguous record's candidates (the record stays ambiguous: a purge
        removes, it never decides; the next linkage run decides again). The
        result is a new version, published like a run's. Nothing is written
        when no output holds an opted-out person.
        """
        version = self.current_version()
        if version is None:
            return PurgeOutcome("linkage", "absent", "opt_out_purge", "No linkage output is published.")
        read = {
            t: f"read_parquet('{self.duckdb_uri('outputs', version, t, '*.parquet')}')" for t in OUTPUT_TABLES
        }
        new = new_version()
        with warehouse.read_only() as connection:
            _require_opt_out_registry(connection, with_version=True)
            registry = opt_out_version(connection)
            connection.execute(
                f"""
                CREATE TEMP TABLE excluded_persons AS {excluded_persons_sql()};
                CREATE TEMP TABLE excluded_records AS
                SELECT DISTINCT hdh_provider, coh_rec_id FROM staging.stg_cohort_ext
                WHERE upper(trim(ben_nir_psa)) IN ({excluded_pseudonyms_sql()});
                CREATE TEMP VIEW purged_links AS
                SELECT * FROM {read["links"]}
                ANTI JOIN excluded_records USING (hdh_provider, coh_rec_id)
                ANTI JOIN excluded_persons USING (ben_idt_ano);
                CREATE TEMP VIEW purged_unlinked AS
                SELECT * FROM {read["unlinked"]} ANTI JOIN excluded_records USING (hdh_provider, coh_rec_id);
                CREATE TEMP TABLE ambiguous_kept AS
                SELECT * FROM {read["ambiguous"]}
                ANTI JOIN excluded_records USING (hdh_provider, coh_rec_id);
                CREATE TEMP VIEW purged_ambiguous AS
                WITH candidates AS (
                    SELECT hdh_provider, coh_rec_id, unnest(candidate_ben_idt_anos) AS ben_idt_ano
                    FROM ambiguous_kept
                ), kept AS (
                    SELECT hdh_provider, coh_rec_id, list(ben_idt_ano ORDER BY ben_idt_ano) AS candidates
                    FROM candidates ANTI JOIN excluded_persons USING (ben_idt_ano) GROUP BY ALL
                )
                -- A record is one row of ambiguous: its key identifies it.
                SELECT a.* REPLACE (
                    coalesce(kept.candidates, []) AS candidate_ben_idt_anos,
                    CAST(len(coalesce(kept.candidates, [])) AS INTEGER) AS candidate_count
                )
                FROM ambiguous_kept AS a LEFT JOIN kept USING (hdh_provider, coh_rec_id)
                """
            )
            before = {
                t: connection.execute(f"SELECT count(*) FROM {read[t]}").fetchone()[0] for t in OUTPUT_TABLES
            }
            after = {
                t: connection.execute(f"SELECT count(*) FROM purged_{t}").fetchone()[0] for t in OUTPUT_TABLES
            }
            # Opted-out persons and records found in the outputs (a record left unlinked has no person).
            removed, candidates_removed = connection.execute(
                f"""
                WITH candidates AS (SELECT unnest(candidate_ben_idt_anos) AS ben_idt_ano FROM ambiguous_kept),
                found AS (
                    SELECT ben_idt_ano FROM {read["links"]} SEMI JOIN excluded_persons USING (ben_idt_ano)
                    UNION SELECT ben_idt_ano FROM candidates SEMI JOIN excluded_persons USING (ben_idt_ano)
                    UNION SELECT hdh_provider || '/' || coh_rec_id FROM (
                        SELECT hdh_provider, coh_rec_id FROM {read["unlinked"]}
                        UNION SELECT hdh_provider, coh_rec_id FROM {read["ambiguous"]}
                        UNION SELECT hdh_provider, coh_rec_id FROM {read["links"]}
                    ) SEMI JOIN excluded_records USING (hdh_provider, coh_rec_id)
                )
                SELECT (SELECT count(*) FROM found),
                       (SELECT count(*) FROM candidates SEMI JOIN excluded_persons USING (ben_idt_ano))
                """
            ).fetchone()
            if before == after and not candidates_removed:
                return PurgeOutcome(
                    "linkage",
                    "clean",
                    "opt_out_purge",
                    "No opted-out person is in the linkage outputs.",
                    row_counts=before,
                    registry_version=registry,
                )
            try:
                for table in OUTPUT_TABLES:
                    if self.local is not None:
                        make_private_dir(self.local / "outputs" / new / table)
                    part = self.duckdb_uri("outputs", new, table, "part-00000.parquet")
                    connection.execute(f"COPY purged_{table} TO '{part}' (FORMAT parquet)")
                    self.write(b"", "outputs", new, table, "_SUCCESS")
            except BaseException:
                self.remove("outputs", new)
                raise
        summary = self.read_summary(version)
        summary["opt_out_purge"] = {
            "purged_version": version,
            "rows": after,
            "registry_digest": registry["digest"],
        }
        self.write_summary(new, summary)
        self.publish(warehouse, new)
        return PurgeOutcome(
            "linkage",
            "purged",
            "opt_out_purge",
            "Links, unlinked and ambiguous records of persons who opted out were removed.",
            persons_removed=removed,
            rows_removed=sum(before.values()) - sum(after.values()),
            row_counts=after,
            registry_version=registry,
        )
