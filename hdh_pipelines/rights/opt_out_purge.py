"""Opt-outs reaching every copy, and expired workspaces leaving disk, as Dagster jobs.

``opt_out_purge_job`` (launched by ``opt_out_purge_sensor`` after each new
materialisation of ``intermediate/int_opt_out_exclusions``) removes the
persons the registry now excludes from every published workspace, every
data-challenge export and the linkage outputs. ``workspace_retention_job``
(launched by ``project_registry_sensor``) deletes the workspaces of expired
or withdrawn projects. Each copy is purged or deleted atomically and on its
own: one that fails (a missing project key) does not stop the others, is
recorded as failed in the audit trail, and fails the run. The logic is
``hdh_pipelines.workspaces.purge``, ``open_science.challenge`` and
``linkage.storage``; docs/workspaces.md explains the flow.
"""

from datetime import date
from pathlib import Path

import dagster as dg

from hdh_pipelines.core.constants import REQUESTER_TAG, WAREHOUSE_POOL
from hdh_pipelines.core.disclosure import coarse_count
from hdh_pipelines.linkage.assets import LINKS
from hdh_pipelines.linkage.resources import LinkageStorageResource
from hdh_pipelines.linkage.storage import LinkageRoot, LinkageStorageError
from hdh_pipelines.open_science import OpenDataRefused, load_challenge_key
from hdh_pipelines.open_science.challenge import challenge_exports, purge_challenge_export
from hdh_pipelines.open_science.resources import OpenScienceResource
from hdh_pipelines.rights.opt_out import PurgeOutcome, failed_outcome
from hdh_pipelines.workspaces import WorkspaceRefused, scan_registry
from hdh_pipelines.workspaces.assets import AUDIT_TRAIL_KEY
from hdh_pipelines.workspaces.purge import (
    PURGE_REQUESTER,
    RETENTION_REQUESTER,
    audit_outcome,
    delete_workspace,
    published_workspaces,
    purge_workspace,
    retention_plan,
)
from hdh_pipelines.workspaces.resources import WorkspaceResource

DATA_CHALLENGE_KEY = dg.AssetKey(["open_science", "data_challenge"])
_REFUSALS = (WorkspaceRefused, OpenDataRefused, LinkageStorageError)
# A warehouse being rebuilt (DuckDB's lock) is worth another try; a refusal is not retried.
_RETRY = dg.RetryPolicy(max_retries=2, delay=60, backoff=dg.Backoff.EXPONENTIAL)
_OP_TAGS = {"hdh/layer": "opt_out"}


def _report(
    context: dg.OpExecutionContext,
    audit_root: Path,
    asset_key: dg.AssetKey,
    outcomes: list[PurgeOutcome],
    requester: str,
) -> None:
    """Audit each outcome, show it as an observation (coarse counts only), fail if any copy failed."""
    for outcome in outcomes:
        audit_outcome(audit_root, outcome, run_id=context.run_id, requester=requester)
        context.log_event(
            dg.AssetObservation(
                asset_key=asset_key,
                metadata={
                    "copy": outcome.copy,
                    "outcome": outcome.outcome,
                    "reason": outcome.reason,
                    "opted_out_persons_removed": str(coarse_count(outcome.persons_removed)),
                    "opt_out_registry_version": outcome.registry_version.get("digest", "unknown"),
                },
            )
        )
    counts = {name: sum(o.outcome == name for o in outcomes) for name in ("purged", "clean", "deleted")}
    context.log.info(f"{len(outcomes)} copies: {counts}.")
    failures = [o for o in outcomes if o.outcome == "failed"]
    if failures:
        raise dg.Failure(
            description=f"{len(failures)} of {len(outcomes)} copies could not be purged: "
            + "; ".join(f"{o.copy} ({o.reason}): {o.message}" for o in failures),
            metadata={"failed_copies": ", ".join(o.copy for o in failures)},
            allow_retries=any(o.retryable for o in failures),
        )


def _requester(context: dg.OpExecutionContext, default: str) -> str:
    return context.run.tags.get(REQUESTER_TAG, default)


@dg.op(pool=WAREHOUSE_POOL, retry_policy=_RETRY, tags=_OP_TAGS)
def purge_workspaces(context: dg.OpExecutionContext, workspaces: WorkspaceResource) -> None:
    """Remove opted-out persons from every published workspace (each swapped in whole, under its lock)."""
    settings = workspaces.settings()
    outcomes = []
    with workspaces.warehouse.exclusive():
        for project_id in published_workspaces(settings.root):
            try:
                outcomes.append(purge_workspace(settings, project_id, run_id=context.run_id))
            except Exception as error:
                outcomes.append(failed_outcome(project_id, error, _REFUSALS))
    _report(context, settings.audit_root, AUDIT_TRAIL_KEY, outcomes, _requester(context, PURGE_REQUESTER))


@dg.op(pool=WAREHOUSE_POOL, retry_policy=_RETRY, tags=_OP_TAGS)
def purge_challenge_exports(
    context: dg.OpExecutionContext, open_science: OpenScienceResource, workspaces: WorkspaceResource
) -> None:
    """Remove opted-out persons from every data-challenge export still held by the hub."""
    exports = challenge_exports(Path(open_science.challenge_root))
    outcomes = []
    if exports:
        try:
            key = load_challenge_key(open_science.challenge_key)
        except OpenDataRefused as refusal:
            outcomes = [failed_outcome(f"challenge/{f.name}", refusal, _REFUSALS) for f in exports]
        else:
            with workspaces.warehouse.exclusive():
                for folder in exports:
                    try:
                        outcomes.append(purge_challenge_export(workspaces.warehouse.warehouse(), key, folder))
                    except Exception as error:
                        outcomes.append(failed_outcome(f"challenge/{folder.name}", error, _REFUSALS))
    _report(
        context,
        Path(workspaces.audit_root),
        DATA_CHALLENGE_KEY,
        outcomes,
        _requester(context, PURGE_REQUESTER),
    )


@dg.op(pool=WAREHOUSE_POOL, retry_policy=_RETRY, tags=_OP_TAGS)
def purge_linkage_outputs(
    context: dg.OpExecutionContext,
    linkage_storage: LinkageStorageResource,
    workspaces: WorkspaceResource,
) -> None:
    """Remove opted-out persons and their cohort records from linkage.links, unlinked and ambiguous."""
    try:
        with linkage_storage.warehouse.exclusive():
            outcome = LinkageRoot.from_uri(linkage_storage.linkage_root).purge_outputs(
                linkage_storage.warehouse.warehouse()
            )
    except Exception as error:
        outcome = failed_outcome("linkage", error, _REFUSALS)
    _report(context, Path(workspaces.audit_root), LINKS, [outcome], _requester(context, PURGE_REQUESTER))


@dg.job(
    tags={"hdh/kind": "opt_out_purge"},
    description="Remove every person the opt-out registry (intermediate/int_opt_out_exclusions) now "
    "excludes from every workspace, data-challenge export and linkage output; launched by "
    "opt_out_purge_sensor. Idempotent: a copy holding none of them is not rewritten.",
)
def opt_out_purge_job():
    purge_workspaces()
    purge_challenge_exports()
    purge_linkage_outputs()


@dg.op(retry_policy=_RETRY, tags={"hdh/layer": "workspaces"})
def delete_expired_workspaces(context: dg.OpExecutionContext, workspaces: WorkspaceResource) -> None:
    """Delete the workspaces whose project expired or was withdrawn, as the registry says now."""
    settings = workspaces.settings()
    plan = retention_plan(
        scan_registry(settings.projects_dir), published_workspaces(settings.root), date.today()
    )
    outcomes = []
    for project_id, reason in plan.items():
        try:
            outcomes.append(
                delete_workspace(
                    settings,
                    project_id,
                    reason,
                    "The project's authorisation ended (expired or withdrawn): its workspace was deleted; "
                    "the hub keeps no archive of it.",
                )
            )
        except Exception as error:
            outcomes.append(failed_outcome(project_id, error, _REFUSALS))
    _report(context, settings.audit_root, AUDIT_TRAIL_KEY, outcomes, _requester(context, RETENTION_REQUESTER))


@dg.job(
    tags={"hdh/kind": "workspace_retention"},
    description="Delete the workspaces of expired or withdrawn projects "
    "(launched by project_registry_sensor).",
)
def workspace_retention_job():
    delete_expired_workspaces()
