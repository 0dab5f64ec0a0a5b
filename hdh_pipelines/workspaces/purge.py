"""Opt-outs and retention applied to published workspaces, without a build: remove, never add.

``purge_workspace`` removes from one workspace every person the opt-out
registry (``intermediate.int_opt_out_exclusions``) now excludes: each
Parquet file (and ``workspace.duckdb``) is rewritten without their rows in
one DuckDB session, the documents are regenerated from what was written, and
the result is exchanged with the workspace in one atomic rename under the
project's lock, exactly as a build publishes. Nothing else changes: no month
is extracted again, so the lead's next build still carries the months over.
A workspace holding none of them is left untouched (the purge is idempotent).
It needs the project's key (the workspace holds project pseudonyms) but not
the project file, so an invalid file never keeps an opted-out person in.

``retention_plan`` and ``delete_workspace`` remove whole workspaces whose
project expired or was withdrawn (docs/workspaces.md, "Retention"): the hub
keeps no archive of an extract.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

from hdh_pipelines.core.private_files import make_private_dir, make_tree_owner_only, write_private_file
from hdh_pipelines.core.sql import quote_literal
from hdh_pipelines.rights.opt_out import PurgeOutcome, excluded_persons_sql, opt_out_version
from hdh_pipelines.workspaces.audit import AuditRecord, append_audit_record
from hdh_pipelines.workspaces.build import (
    STAGING_DIR,
    WorkspaceSettings,
    project_lock,
    swap_in,
)
from hdh_pipelines.workspaces.datasets import EXTRACTABLE_DATASETS, PERSON_PSEUDONYM
from hdh_pipelines.workspaces.documents import (
    REGULATORY_DIR,
    DatasetDoc,
    dictionary_csv,
    manifest_json,
    read_dictionary,
    read_manifest,
    readme_markdown,
)
from hdh_pipelines.workspaces.errors import WorkspaceRefused
from hdh_pipelines.workspaces.projects import PROJECT_ID_PATTERN, RegistryScan
from hdh_pipelines.workspaces.pseudonyms import install_project_key, key_fingerprint, load_project_key

PURGE_REQUESTER = "opt-out-purge"
RETENTION_REQUESTER = "retention"


def published_workspaces(root: Path) -> list[str]:
    """Project ids of the workspaces published under ``root`` (staging and lock folders are not)."""
    if not root.is_dir():
        return []
    return sorted(
        path.name
        for path in root.iterdir()
        if re.fullmatch(PROJECT_ID_PATTERN, path.name) and (path / "manifest.json").is_file()
    )


def retention_plan(scan: RegistryScan, published: list[str], today: date) -> dict[str, str]:
    """Published workspaces to delete and why: ``project_expired`` or ``project_withdrawn`` (no file).

    A project whose file is invalid keeps its workspace (an invalid file
    changes nothing; opt-outs are still purged from it, needing only the key).
    """
    refused = {refusal.project_id for refusal in scan.refused}
    plan = {}
    for project_id in published:
        project = scan.projects.get(project_id)
        if project is not None and today > project.expires_on:
            plan[project_id] = "project_expired"
        elif project is None and project_id not in refused:
            plan[project_id] = "project_withdrawn"
    return plan


def _staging_for(root: Path, project_id: str) -> Path:
    staging_root = make_private_dir(root / STAGING_DIR)
    for leftover in staging_root.glob(f"{project_id}.*"):
        # A killed run's leftovers, or an older workspace moved aside: never visible, safe to remove.
        shutil.rmtree(leftover, ignore_errors=True)
    return make_private_dir(staging_root / f"{project_id}.{uuid.uuid4().hex}")


def _remove_published(root: Path, project_id: str) -> None:
    """Take the workspace out of readers' sight in one rename, then delete it."""
    aside = _staging_for(root, project_id)
    os.rename(root / project_id, aside / "removed")
    shutil.rmtree(aside, ignore_errors=True)


def delete_workspace(settings: WorkspaceSettings, project_id: str, reason: str, message: str) -> PurgeOutcome:
    """Delete a published workspace whole (under its lock); the outcome keeps its last row counts."""
    with project_lock(settings.root, project_id):
        manifest = read_manifest(settings.root / project_id)
        if manifest is None:
            return PurgeOutcome(project_id, "absent", reason, "No workspace was published.")
        _remove_published(settings.root, project_id)
    return PurgeOutcome(
        project_id,
        "deleted",
        reason,
        message,
        row_counts={name: d["rows"] for name, d in manifest["datasets"].items()},
        registry_version=manifest.get("opt_out_registry_version", {}),
    )


def purge_workspace(
    settings: WorkspaceSettings, project_id: str, *, run_id: str, environ: Mapping[str, str] = os.environ
) -> PurgeOutcome:
    """Remove every opted-out person from ``project_id``'s published workspace (see the module docstring).

    A workspace whose pseudonyms were made with another key than the
    project's current one cannot be purged (its persons cannot be named): it
    is deleted, and the lead's next build makes a new one. A missing key
    raises ``WorkspaceRefused`` and changes nothing.
    """
    key = load_project_key(project_id, settings.secrets_file, environ)
    with project_lock(settings.root, project_id):
        target = settings.root / project_id
        manifest = read_manifest(target)
        if manifest is None:
            return PurgeOutcome(project_id, "absent", "opt_out_purge", "No workspace was published.")
        if manifest["signature"]["key_fingerprint"] != key_fingerprint(key):
            _remove_published(settings.root, project_id)
            return PurgeOutcome(
                project_id,
                "deleted",
                "key_changed",
                "The workspace was made with an earlier key of the project: its persons cannot be named "
                "to remove those who opted out, so it was deleted; the next build makes it again.",
                row_counts={name: d["rows"] for name, d in manifest["datasets"].items()},
            )
        staging = _staging_for(settings.root, project_id)
        try:
            return _purge_into(settings, target, manifest, key, staging, run_id)
        finally:
            shutil.rmtree(staging.with_name(staging.name + ".spill"), ignore_errors=True)
            shutil.rmtree(staging, ignore_errors=True)


def _purge_into(
    settings: WorkspaceSettings, target: Path, manifest: dict, key: bytes, staging: Path, run_id: str
) -> PurgeOutcome:
    project_id = manifest["project"]
    files = sorted((target / "parquet").glob("**/*.parquet"))
    connection = duckdb.connect(
        config={
            "memory_limit": settings.memory_limit,
            "threads": settings.threads,
            "temp_directory": str(staging.with_name(staging.name + ".spill")),
            "preserve_insertion_order": False,
        }
    )
    try:
        try:
            settings.warehouse.attach(connection, "wh")
            version = opt_out_version(connection, "wh")
        except duckdb.Error as error:
            raise WorkspaceRefused(
                "opt_out_registry_missing",
                f"The opt-out registry cannot be read from the warehouse ({type(error).__name__}); "
                "the purge is retried once the normalisation has built it.",
                project_id=project_id,
            ) from None
        install_project_key(connection, key)
        connection.execute(
            f"create temp table excluded as select project_pseudonym('person', ben_idt_ano) "
            f"as {PERSON_PSEUDONYM} from ({excluded_persons_sql('wh')})"
        )
        listed = ", ".join(quote_literal(str(f)) for f in files)
        present = (
            connection.execute(
                f"select count(distinct {PERSON_PSEUDONYM}) from read_parquet([{listed}], "
                "union_by_name = true, hive_partitioning = false) "
                f"semi join excluded using ({PERSON_PSEUDONYM})"
            ).fetchone()[0]
            if files
            else 0
        )
        if not present:
            return PurgeOutcome(
                project_id,
                "clean",
                "opt_out_purge",
                "No opted-out person is in the workspace.",
                row_counts={name: d["rows"] for name, d in manifest["datasets"].items()},
                registry_version=version,
            )
        documented = read_dictionary(target)
        make_private_dir(staging / "parquet")
        # In the dictionary's order, which is the build's (the manifest's keys are sorted).
        datasets = [
            _rewrite(connection, name, target, staging, columns) for name, columns in documented.items()
        ]
        if (target / "workspace.duckdb").exists():
            _rewrite_duckdb(connection, target, staging, [doc.name for doc in datasets])
    finally:
        connection.close()

    before = sum(d["rows"] for d in manifest["datasets"].values())
    purged = _purged_manifest(manifest, datasets, present, version, run_id)
    write_private_file(staging / "manifest.json", manifest_json(purged))
    write_private_file(staging / "data_dictionary.csv", dictionary_csv(datasets).encode())
    write_private_file(staging / "README.md", readme_markdown(datasets, purged).encode())
    # The regulatory documents name no person: the purged version keeps them as they are.
    if (target / REGULATORY_DIR).is_dir():
        shutil.copytree(target / REGULATORY_DIR, staging / REGULATORY_DIR)
    make_tree_owner_only(staging)
    swap_in(staging, target)
    return PurgeOutcome(
        project_id,
        "purged",
        "opt_out_purge",
        "Persons who opted out were removed from every month and table of the workspace.",
        persons_removed=present,
        rows_removed=before - sum(doc.rows for doc in datasets),
        row_counts={doc.name: doc.rows for doc in datasets},
        registry_version=version,
    )


def _rewrite(
    connection: duckdb.DuckDBPyConnection, name: str, target: Path, staging: Path, columns: list
) -> DatasetDoc:
    """One dataset's files without the excluded persons, laid out as a build lays them out."""
    if EXTRACTABLE_DATASETS[name].period_column is None:
        source, output = target / "parquet" / f"{name}.parquet", staging / "parquet" / f"{name}.parquet"
        rows = connection.execute(
            f"copy (select * from read_parquet({quote_literal(str(source))}) "
            f"anti join excluded using ({PERSON_PSEUDONYM})) to {quote_literal(str(output))} (format parquet)"
        ).fetchone()[0]
        return DatasetDoc(name, rows, columns, [])
    months = target / "parquet" / name
    output = staging / "parquet" / name
    if not any(months.glob("month=*/*.parquet")):
        return DatasetDoc(name, 0, columns, [])
    reader = (
        f"read_parquet({quote_literal(str(months / 'month=*' / '*.parquet'))}, hive_partitioning = true, "
        "hive_types = {'month': varchar})"
    )
    connection.execute(
        f"copy (select * from {reader} anti join excluded using ({PERSON_PSEUDONYM})) "
        f"to {quote_literal(str(output))} (format parquet, partition_by (month))"
    )
    written = quote_literal(str(output / "month=*" / "*.parquet"))
    by_month = (
        dict(
            connection.execute(
                f"select month, count(*) from read_parquet({written}, "
                "hive_partitioning = true, hive_types = {'month': varchar}) group by month"
            ).fetchall()
        )
        if any(output.glob("month=*/*.parquet"))
        else {}
    )
    return DatasetDoc(name, sum(by_month.values()), columns, sorted(by_month))


def _rewrite_duckdb(
    connection: duckdb.DuckDBPyConnection, target: Path, staging: Path, tables: list[str]
) -> None:
    """``workspace.duckdb`` again, each table without the excluded persons (its schema kept when empty)."""
    connection.execute(f"attach {quote_literal(str(target / 'workspace.duckdb'))} as previous (read_only)")
    connection.execute(f"attach {quote_literal(str(staging / 'workspace.duckdb'))} as out")
    for table in tables:
        connection.execute(
            f"create table out.{table} as select * from previous.{table} "
            f"anti join excluded using ({PERSON_PSEUDONYM})"
        )
    connection.execute("detach out")
    connection.execute("detach previous")


def _purged_manifest(
    manifest: dict, datasets: list[DatasetDoc], removed: int, version: dict[str, str], run_id: str
) -> dict:
    purged = dict(manifest)
    purged["datasets"] = {
        doc.name: {**manifest["datasets"][doc.name], "rows": doc.rows, "months_with_rows": doc.months}
        for doc in datasets
    }
    # Persons of the population when it was built, less those removed since.
    purged["population"] = {**manifest["population"], "persons": manifest["population"]["persons"] - removed}
    purged["opt_out_registry_version"] = version
    purged["opt_out_purges"] = [
        *manifest.get("opt_out_purges", []),
        {
            "purged_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "run_id": run_id,
            "registry_digest": version["digest"],
        },
    ]
    return purged


def audit_outcome(
    audit_root: Path, outcome: PurgeOutcome, *, run_id: str, requester: str, datasets: list[str] | None = None
) -> None:
    """Append one copy's purge or deletion to the audit trail (a ``clean`` copy records nothing)."""
    if outcome.outcome in ("clean", "absent"):
        return
    append_audit_record(
        audit_root,
        AuditRecord(
            project=outcome.copy,
            run_id=run_id,
            requester=requester,
            outcome=outcome.outcome,
            reason=outcome.reason,
            message=outcome.message,
            datasets=datasets if datasets is not None else sorted(outcome.row_counts),
            row_counts=outcome.row_counts,
            opted_out_persons_removed=outcome.persons_removed,
            opt_out_registry_version=outcome.registry_version,
        ),
    )
