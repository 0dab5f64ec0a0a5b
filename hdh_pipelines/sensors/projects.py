"""The project registry sensor: one ``projects`` partition per valid, unexpired project file.

A new or renewed project file adds its partition; an expired or deleted one
removes it from scheduling (its materialisations stay in the history). An
invalid file changes nothing: the sensor logs the file, the field and the
reason, and a known project keeps its partition while every run of it is
refused until the file is fixed. The sensor launches nothing: materialising a
workspace is the project lead's decision (docs/workspaces.md).
"""

from datetime import date
from pathlib import Path

import dagster as dg

from hdh_pipelines.assets.workspaces import PROJECTS, WorkspaceResource
from hdh_pipelines.workspaces import partition_changes, scan_registry


@dg.sensor(
    name="project_registry_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the 'projects' partitions in step with the project registry (projects/*.yaml): "
    "adds valid projects, removes expired or withdrawn ones, reports invalid files.",
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
    changes = partition_changes(scan, known, date.today())
    if not (changes.add or changes.remove):
        return dg.SkipReason(
            f"Registry unchanged: {len(scan.projects)} valid project file(s), {len(scan.refused)} refused."
        )
    requests = []
    if changes.add:
        requests.append(PROJECTS.build_add_request(changes.add))
    if changes.remove:
        requests.append(PROJECTS.build_delete_request(changes.remove))
    context.log.info(f"Projects added: {changes.add or 'none'}; removed: {changes.remove or 'none'}.")
    return dg.SensorResult(dynamic_partitions_requests=requests)
