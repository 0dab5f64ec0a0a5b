"""Project workspaces as Dagster assets: one partition per (project, month), the audit trail beside them.

``workspaces/project_workspace`` is partitioned by project (dynamic, kept in
step with ``projects/`` by ``project_registry_sensor``) × month. Its backfill
policy is a single run: a project lead who backfills months M1..Mn of their
project gets one run that rebuilds those months and re-filters the others
(docs/workspaces.md). The logic is ``hdh_pipelines.workspaces``; this module
only maps partitions to months and results to metadata and failures.
"""

from collections import defaultdict
from datetime import date
from pathlib import Path

import dagster as dg

from hdh_pipelines.core.constants import REQUESTER_TAG, WAREHOUSE_POOL
from hdh_pipelines.core.disclosure import coarse_count
from hdh_pipelines.rights.opt_out import EXCLUSIONS_TABLE, OPT_OUT_STAGING_TABLE
from hdh_pipelines.workspaces import (
    EXTRACTABLE_DATASETS,
    WorkspaceRefused,
    WorkspaceResult,
    audit_glob,
    materialise_workspace,
    read_audit_trail,
)
from hdh_pipelines.workspaces.audit import process_requester
from hdh_pipelines.workspaces.partitions import WORKSPACE_PARTITIONS, months_by_project
from hdh_pipelines.workspaces.resources import WorkspaceResource

WORKSPACES_GROUP = "workspaces"
WORKSPACE_OWNERS = ["team:data-governance"]
AUDIT_TRAIL_KEY = dg.AssetKey(["workspaces", "audit_trail"])

# The one model every opt-out purge reads; its materialisations trigger the purge of every copy.
OPT_OUT_EXCLUSIONS_KEY = dg.AssetKey(EXCLUSIONS_TABLE.split("."))

WORKSPACE_INPUTS = [
    *(dg.AssetKey(["marts", name]) for name in EXTRACTABLE_DATASETS if name != "cohort_ext"),
    dg.AssetKey(["linkage", "links"]),
    dg.AssetKey(["staging", "stg_cohort_ext"]),
    dg.AssetKey(OPT_OUT_STAGING_TABLE.split(".")),
    OPT_OUT_EXCLUSIONS_KEY,
]


def _results_metadata(results: list[WorkspaceResult]) -> dict:
    """Metadata of a run; a run normally holds one project, a one-month backfill of several may hold more.

    No person or row count: the event log is read by more people than the
    owner-only audit trail, and an exact population or row count next to the
    coarsened number of persons removed (or across two runs) would give that
    number back. Exact counts are in the manifest and the audit trail.
    """
    records = [result.record for result in results]
    metadata = {
        "projects": ", ".join(result.project.id for result in results),
        "months_extracted": "; ".join(", ".join(r.months_extracted) for r in records),
        "months_carried_over": "; ".join(", ".join(r.months_carried_over) or "none" for r in records),
        "datasets": dg.MetadataValue.md(
            "| project | dataset | columns | months with rows |\n|---|---|---|---|\n"
            + "\n".join(
                f"| {result.project.id} | {doc.name} | {len(doc.columns)} | "
                f"{len(doc.months) if doc.months else ('-' if doc.rows else 'none')} |"
                for result in results
                for doc in result.datasets
            )
        ),
        "opt_out_registry_version": records[0].opt_out_registry_version.get("digest", "unknown"),
        "opted_out_persons_removed": str(
            coarse_count(sum(r.opted_out_persons_removed or 0 for r in records))
        ),
        "approval": dg.MetadataValue.json({r.project: r.approval_references for r in records}),
    }
    if len(results) == 1:
        metadata["workspace"] = dg.MetadataValue.path(str(results[0].path))
    return metadata


@dg.asset(
    key=["workspaces", "project_workspace"],
    partitions_def=WORKSPACE_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=WORKSPACE_INPUTS,
    group_name=WORKSPACES_GROUP,
    owners=WORKSPACE_OWNERS,
    kinds={"duckdb", "parquet"},
    # The extract holds the warehouse file open (read-only), which blocks dbt's writer: never both at once.
    pool=WAREHOUSE_POOL,
    tags={"hdh/layer": "workspaces"},
    description="One authorised project's workspace: only its approved columns, population and period, "
    "people on the opt-out registry removed from every month, identifiers replaced by project pseudonyms. "
    "Parquet (+ DuckDB), README, data dictionary and manifest under <root>/<project>/.",
)
def project_workspace(context: dg.AssetExecutionContext, workspaces: WorkspaceResource):
    settings = workspaces.settings()
    # The process's OS account, which the hub can vouch for; the run tag is only a claim (docs/security.md).
    requester = process_requester(context.run.tags.get(REQUESTER_TAG))
    results = []
    with workspaces.warehouse.exclusive():
        for project_id, months in months_by_project(list(context.partition_keys)).items():
            try:
                result = materialise_workspace(
                    settings,
                    project_id,
                    months,
                    run_id=context.run_id,
                    requester=requester,
                    today=date.today(),
                )
            except WorkspaceRefused as refusal:
                details = refusal.as_dict()
                # Yielded, not logged: a failing step never flushes logged events.
                yield dg.AssetObservation(
                    asset_key=AUDIT_TRAIL_KEY, metadata={"outcome": "refused", **details}
                )
                raise dg.Failure(
                    description=f"Workspace of {project_id} refused ({refusal.reason}): {refusal.message}",
                    metadata=details,
                    allow_retries=False,
                ) from None
            yield dg.AssetObservation(
                asset_key=AUDIT_TRAIL_KEY,
                metadata={"outcome": "materialised", "project": project_id, "requester": requester},
            )
            results.append(result)
    yield dg.MaterializeResult(metadata=_results_metadata(results))


@dg.asset(
    key=AUDIT_TRAIL_KEY,
    deps=[project_workspace],
    group_name=WORKSPACES_GROUP,
    owners=WORKSPACE_OWNERS,
    kinds={"parquet"},
    tags={"hdh/layer": "workspaces"},
    description="Append-only audit trail: every workspace materialisation, refusal and failure with "
    "project, run id, requester (the run's OS account; a hdh/requester tag only as a claim), datasets, "
    "row counts, approval references and "
    "the opt-out registry version applied. Records are written by the workspace runs themselves and never "
    "updated or deleted; materialising this asset reports the trail.",
)
def workspace_audit_trail(workspaces: WorkspaceResource) -> dg.MaterializeResult:
    root = Path(workspaces.audit_root)
    records = read_audit_trail(root)
    outcomes: dict[str, int] = defaultdict(int)
    for record in records:
        outcomes[record["outcome"]] += 1
    latest = records[-20:]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(records),
            "by_outcome": dict(outcomes),
            # No row counts: two successive records' counts would give back a coarsened removal.
            "latest": dg.MetadataValue.md(
                "| recorded at | project or copy | run | requester | outcome | reason | opted-out removed |\n"
                "|---|---|---|---|---|---|---|\n"
                + "\n".join(
                    f"| {r['recorded_at']} | {r['project']} | {r['run_id'][:8]} | {r['requester']} "
                    f"| {r['outcome']} | {r['reason'] or ''} "
                    f"| {coarse_count(r['opted_out_persons_removed'] or 0)} |"
                    for r in latest
                )
            ),
            "records": dg.MetadataValue.path(audit_glob(root)),
        }
    )
