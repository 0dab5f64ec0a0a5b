"""Where the linkage reads and writes: Parquet under a linkage root, published to the warehouse as views.

Spark executors on a cluster cannot open the driver's DuckDB file, so the
inputs are first copied out of the warehouse as Parquet under the linkage
root (a folder every executor sees: local for ``local[*]``, a shared mount
for ``spark://`` or Kubernetes). Layout::

    <root>/inputs/<version>/{pseudonyms,persons,cohort}.parquet
    <root>/outputs/<version>/{links,unlinked,ambiguous}/part-*.parquet
    <root>/outputs/<version>/summary.json

A version folder is complete before anyone reads it: Spark's commit protocol
writes under ``_temporary`` and moves files in at the end, and the warehouse
views (``linkage.links``, ``linkage.unlinked``, ``linkage.ambiguous``) are
switched to the new version in one DuckDB transaction, so readers see the
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

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import duckdb

from hdh_pipelines.core.private_files import (
    PRIVATE_FILE_MODE,
    make_private_dir,
    make_tree_owner_only,
    write_private_file,
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


def _require_opt_out_registry(connection: duckdb.DuckDBPyConnection, *, with_version: bool = False) -> None:
    """The exclusions must exist (and, to record its version, the registry's staging table)."""
    tables = [EXCLUSIONS_TABLE, *([OPT_OUT_STAGING_TABLE] if with_version else [])]
    try:
        connection.execute(f"SELECT 1 FROM {', '.join(tables)} LIMIT 0")
    except duckdb.CatalogException:
        raise LinkageStorageError(
            "opt_out_registry_missing",
            f"The warehouse has no {EXCLUSIONS_TABLE}: the cohort is never linked without the opt-out "
            "registry applied; build the normalisation first.",
        ) from None


def local_path(uri: str) -> Path:
    """The local folder of a ``file://`` URI or plain path; other schemes are not handled by this module."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri).resolve()
    raise LinkageStorageError(
        "unsupported_root",
        f"The linkage root {uri!r} is not a local or mounted folder; mount shared storage on every node "
        "and give its path (see docs/linkage.md).",
    )


def new_version() -> str:
    """Sortable by time, unique across concurrent runs."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class LinkageRoot:
    root: Path

    @classmethod
    def from_uri(cls, uri: str) -> LinkageRoot:
        return cls(local_path(uri))

    def uri(self, path: Path) -> str:
        return path.as_uri()

    def inputs_dir(self, version: str) -> Path:
        return self.root / "inputs" / version

    def outputs_dir(self, version: str) -> Path:
        return self.root / "outputs" / version

    def stage_inputs(
        self, warehouse_path: str, version: str, *, truth_table: str | None = None
    ) -> dict[str, Path]:
        """Copy the inputs (and a truth table, for tests and benchmarks) out of the warehouse as Parquet."""
        queries = {
            name: f"SELECT staged.* FROM ({query}) AS staged {OPT_OUT_FILTERS[name]}"
            if name in OPT_OUT_FILTERS
            else query
            for name, query in INPUT_QUERIES.items()
        }
        if truth_table:
            queries["truth"] = f"SELECT hdh_provider, coh_rec_id, true_ben_idt_ano FROM {truth_table}"
        folder = make_private_dir(self.inputs_dir(version))
        written = {}
        try:
            with duckdb.connect(warehouse_path, read_only=True) as connection:
                _require_opt_out_registry(connection)
                for name, query in queries.items():
                    path = folder / f"{name}.parquet"
                    temporary = folder / f".{name}.{uuid.uuid4().hex}.tmp"
                    connection.execute(f"COPY ({query}) TO '{temporary}' (FORMAT parquet)")
                    os.chmod(temporary, PRIVATE_FILE_MODE)
                    os.replace(temporary, path)
                    written[name] = path
        except (duckdb.CatalogException, LinkageStorageError) as error:
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(error, LinkageStorageError):
                raise
            raise LinkageStorageError(
                "missing_input",
                f"A linkage input is missing from the warehouse (build the dbt models first): "
                f"{str(error).splitlines()[0]}",
            ) from error
        return written

    def write_summary(self, version: str, summary: dict) -> None:
        write_private_file(
            self.outputs_dir(version) / "summary.json",
            json.dumps(summary, indent=2, sort_keys=True, default=str).encode(),
        )

    def publish(self, warehouse_path: str, version: str) -> None:
        """Point the warehouse views at ``version`` (one transaction), then drop unreferenced versions."""
        outputs = self.outputs_dir(version)
        missing = [t for t in OUTPUT_TABLES if not (outputs / t / "_SUCCESS").exists()]
        if missing:
            raise LinkageStorageError(
                "incomplete_output", f"Outputs {missing} of run {version} are incomplete."
            )
        make_tree_owner_only(outputs)
        with duckdb.connect(warehouse_path) as connection:
            connection.execute("BEGIN TRANSACTION")
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {WAREHOUSE_SCHEMA}")
            for table in OUTPUT_TABLES:
                glob = str(outputs / table / "*.parquet").replace("'", "''")
                connection.execute(
                    f"CREATE OR REPLACE VIEW {WAREHOUSE_SCHEMA}.{table} AS "
                    f"SELECT * FROM read_parquet('{glob}')"
                )
            connection.execute("COMMIT")
        write_private_file(self.root / "CURRENT", version.encode())
        self.remove_other_versions(version)

    def current_version(self) -> str | None:
        marker = self.root / "CURRENT"
        return marker.read_text().strip() if marker.exists() else None

    def remove_other_versions(self, keep: str) -> None:
        """Remove every input and output version but ``keep`` (runs are serialised by the warehouse pool)."""
        for parent in (self.root / "inputs", self.root / "outputs"):
            if parent.is_dir():
                for version in parent.iterdir():
                    if version.name != keep:
                        shutil.rmtree(version, ignore_errors=True)

    def purge_outputs(self, warehouse_path: str) -> PurgeOutcome:
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
        outputs = self.outputs_dir(version)
        read = {t: f"read_parquet('{outputs / t / '*.parquet'}')" for t in OUTPUT_TABLES}
        new = new_version()
        target = self.outputs_dir(new)
        with duckdb.connect(warehouse_path, read_only=True) as connection:
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
                SELECT *, row_number() OVER () AS hdh_row FROM {read["ambiguous"]}
                ANTI JOIN excluded_records USING (hdh_provider, coh_rec_id);
                CREATE TEMP VIEW purged_ambiguous AS
                WITH candidates AS (
                    SELECT hdh_row, unnest(candidate_ben_idt_anos) AS ben_idt_ano FROM ambiguous_kept
                ), kept AS (
                    SELECT hdh_row, list(ben_idt_ano ORDER BY ben_idt_ano) AS candidates
                    FROM candidates ANTI JOIN excluded_persons USING (ben_idt_ano) GROUP BY hdh_row
                )
                SELECT a.* EXCLUDE (hdh_row) REPLACE (
                    coalesce(kept.candidates, []) AS candidate_ben_idt_anos,
                    CAST(len(coalesce(kept.candidates, [])) AS INTEGER) AS candidate_count
                )
                FROM ambiguous_kept AS a LEFT JOIN kept USING (hdh_row)
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
                    folder = make_private_dir(make_private_dir(target) / table)
                    connection.execute(
                        f"COPY purged_{table} TO '{folder / 'part-00000.parquet'}' (FORMAT parquet)"
                    )
                    write_private_file(folder / "_SUCCESS", b"")
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
        summary = (
            json.loads((outputs / "summary.json").read_text()) if (outputs / "summary.json").exists() else {}
        )
        summary["opt_out_purge"] = {
            "purged_version": version,
            "rows": after,
            "registry_digest": registry["digest"],
        }
        self.write_summary(new, summary)
        self.publish(warehouse_path, new)
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
