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

from hdh_pipelines.storage import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, make_private_dir, write_private_file

OUTPUT_TABLES = ("links", "unlinked", "ambiguous")
WAREHOUSE_SCHEMA = "linkage"
INPUT_QUERIES = {
    "pseudonyms": "SELECT ben_nir_psa, ben_rng_gem, ben_idt_ano FROM intermediate.int_pseudonym_persons",
    "persons": "SELECT ben_idt_ano, sex_code, birth_year, birth_month, death_date, residence_departement, "
    "residence_commune FROM marts.persons",
    "cohort": "SELECT hdh_provider, coh_rec_id, ben_nir_psa, nai_ann, nai_moi, sex_cod, res_dpt, res_com, "
    "inc_dte, dcd_dte FROM staging.stg_cohort_ext",
}


class LinkageStorageError(Exception):
    """A problem with the linkage root or the warehouse, with a machine-readable reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


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


def restrict_permissions(folder: Path) -> None:
    """Owner-only for a tree written by another process (Spark follows its own umask)."""
    for directory, _, files in os.walk(folder):
        os.chmod(directory, PRIVATE_DIR_MODE)
        for name in files:
            os.chmod(os.path.join(directory, name), PRIVATE_FILE_MODE)


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
        queries = dict(INPUT_QUERIES)
        if truth_table:
            queries["truth"] = f"SELECT hdh_provider, coh_rec_id, true_ben_idt_ano FROM {truth_table}"
        folder = make_private_dir(self.inputs_dir(version))
        written = {}
        try:
            with duckdb.connect(warehouse_path, read_only=True) as connection:
                for name, query in queries.items():
                    path = folder / f"{name}.parquet"
                    temporary = folder / f".{name}.{uuid.uuid4().hex}.tmp"
                    connection.execute(f"COPY ({query}) TO '{temporary}' (FORMAT parquet)")
                    os.chmod(temporary, PRIVATE_FILE_MODE)
                    os.replace(temporary, path)
                    written[name] = path
        except duckdb.CatalogException as error:
            shutil.rmtree(folder, ignore_errors=True)
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
        restrict_permissions(outputs)
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
