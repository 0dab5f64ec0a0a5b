"""Sensor ticks and runs in this process, for the demo and the tests.

The Dagster daemon does four things with a sensor's result: it records the
asset events it reports, adds the requested dynamic partitions, drops run
requests whose run key the sensor already used, and launches the rest on
their asset and check selection. This module does the same through the
public instance APIs, so the demo needs no daemon and its runs, partitions
and events land in the instance the UI then shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

RUN_KEY_TAG = "dagster/run_key"
SENSOR_NAME_TAG = "dagster/sensor_name"


@dataclass
class TickOutcome:
    cursor: str | None
    skip_reason: str | None = None
    launched: list[dg.ExecuteInProcessResult] = field(default_factory=list)
    duplicates: int = 0


def _already_requested(instance: dg.DagsterInstance, sensor_name: str, run_key: str) -> bool:
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: sensor_name}), limit=1
    )
    return bool(runs)


def tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    sensor_name: str,
    *,
    cursor: str | None = None,
    run_config: dict | None = None,
) -> TickOutcome:
    """Evaluate one tick of ``sensor_name`` and launch (in process) the runs it requests."""
    sensor = defs.resolve_sensor_def(sensor_name)
    # Only what the sensor uses, as the daemon would: other resources may need settings it lacks.
    resources = {k: v for k, v in (defs.resources or {}).items() if k in sensor.required_resource_keys}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        result = sensor(context)
        new_cursor = context.cursor
    if isinstance(result, dg.SkipReason):
        return TickOutcome(cursor=new_cursor, skip_reason=result.skip_message)
    outcome = TickOutcome(
        cursor=result.cursor if result.cursor is not None else new_cursor,
        skip_reason=result.skip_reason.skip_message if result.skip_reason else None,
    )
    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)
    for change in result.dynamic_partitions_requests or []:
        if isinstance(change, dg.DeleteDynamicPartitionsRequest):
            for key in change.partition_keys:
                instance.delete_dynamic_partition(change.partitions_def_name, key)
        else:
            instance.add_dynamic_partitions(change.partitions_def_name, list(change.partition_keys))
    requests = result.run_requests or []
    job = defs.resolve_job_def(sensor.job_name) if requests else None
    for request in requests:
        if request.run_key and _already_requested(instance, sensor_name, request.run_key):
            outcome.duplicates += 1
            continue
        tags = {**request.tags, SENSOR_NAME_TAG: sensor_name}
        if request.run_key:
            tags[RUN_KEY_TAG] = request.run_key
        planned = job
        if request.asset_selection is not None or request.asset_check_keys is not None:
            planned = job.get_subset(
                asset_selection=set(request.asset_selection or []),
                asset_check_selection=None
                if request.asset_check_keys is None
                else set(request.asset_check_keys),
            )
        outcome.launched.append(
            planned.execute_in_process(
                instance=instance,
                partition_key=request.partition_key,
                tags=tags,
                run_config=run_config,
                raise_on_error=False,
            )
        )
    return outcome
