"""The project registry sensor: one ``projects`` partition per valid, unexpired project file.

A new or renewed project file adds its partition; an expired or deleted one
removes it from scheduling (its materialisations stay in the history). An
invalid file changes nothing: the sensor logs the file, the field and the
reason, and a known project keeps its partition while every run of it is
refused until the file is fixed. Materialising a workspace is the project
lead's decision (docs/workspaces.md); the one run the sensor launches is
``workspace_retention_job``, when a published workspace belongs to an expired
or withdrawn project: it is deleted within a tick of the authorisation's end,
not left on disk. The run key names the workspaces and their manifests, so
each is requested once; the run re-reads the registry before deleting.
"""

import hashlib
from datetime import date
from pathlib import Path

import dagster as dg

from hdh_pipelines.core.constants import REQUESTER_TAG
from hdh_pipelines.rights.opt_out_purge import workspace_retention_job
from hdh_pipelines.workspaces import partition_changes, scan_registry
from hdh_pipelines.workspaces.partitions import PROJECTS
from hdh_pipelines.workspaces.purge import RETENTION_REQUESTER, published_workspaces, retention_plan
from hdh_pipelines.workspaces.resources import WorkspaceResource


def retention_run_key(root: Path, plan: dict[str, str]) -> str:
    """One key per set of workspaces to delete, as published (a rebuilt one is requested again)."""
    published = sorted(
        f"{project_id}:{reason}:{(root / project_id / 'manifest.json').stat().st_mtime_ns}"
        for project_id, reason in plan.items()
    )
    return "workspace-retention-" + hashlib.sha256("\n".join(published).encode()).hexdigest()[:16]


@dg.sensor(
    name="project_registry_sensor",
    job=workspace_retention_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the 'projects' partitions in step with the project registry (projects/*.yaml): "
    "adds valid projects, removes expired or withdrawn ones, reports invalid files; launches the deletion "
    "of expired or withdrawn projects' workspaces.",
)
def project_registry_sensor(
    context: dg.SensorEvaluationContext, workspaces: WorkspaceResource
) -> dg.SensorResult | dg.SkipReason:
    scan = scan_registry(Path(workspaces.projects_dir))
    for refusal in scan.refused:
        context.log.error(
            f"Project file refused ({refusal.reason}, field {refusal.field}): {refusal.message}"
        )
    known = set(context.instance.get_dynamic_partitions(PROJECTS.name))
    today = date.today()
    changes = partition_changes(scan, known, today)
    root = Path(workspaces.root)
    retention = retention_plan(scan, published_workspaces(root), today)
    if not (changes.add or changes.remove or retention):
        return dg.SkipReason(
            f"Registry unchanged: {len(scan.projects)} valid project file(s), {len(scan.refused)} refused."
        )
    requests = []
    if changes.add:
        requests.append(PROJECTS.build_add_request(changes.add))
    if changes.remove:
        requests.append(PROJECTS.build_delete_request(changes.remove))
    context.log.info(
        f"Projects added: {changes.add or 'none'}; removed: {changes.remove or 'none'}; "
        f"workspaces to delete: {sorted(retention) or 'none'}."
    )
    runs = (
        [dg.RunRequest(run_key=retention_run_key(root, retention), tags={REQUESTER_TAG: RETENTION_REQUESTER})]
        if retention
        else []
    )
    return dg.SensorResult(dynamic_partitions_requests=requests, run_requests=runs)
