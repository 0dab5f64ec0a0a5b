"""The SFTP inbox sensor: one partition and one run per complete delivery, never twice.

Known deliveries are the ``deliveries`` dynamic partitions stored in the
Dagster instance, so resetting the cursor cannot make the sensor request a
delivery again; the cursor only says where the previous, budget-limited tick
stopped. Run keys (provider, delivery_id, manifest digest) let Dagster drop
any duplicate request as well.
"""

import json

import dagster as dg

from hdh_deliver.transfer import SftpUnavailable
from hdh_pipelines.ingestion.inbox import ScanBudget, scan_inbox
from hdh_pipelines.ingestion.partitions import DELIVERIES, delivery_partition_key, delivery_run_tags
from hdh_pipelines.ingestion.resources import SftpResource
from hdh_pipelines.jobs import ingest_delivery_job


class InboxSensorConfig(dg.Config):
    """Per-tick limits, so a listing of thousands of deliveries stays well within the sensor timeout."""

    max_new_per_tick: int = 25
    max_probes_per_tick: int = 500
    max_seconds_per_tick: float = 20.0


@dg.sensor(
    name="sftp_inbox_sensor",
    job=ingest_delivery_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Finds complete deliveries (manifest.json.sig present) in the SFTP inbox "
    "and requests their ingestion.",
)
def sftp_inbox_sensor(
    context: dg.SensorEvaluationContext, sftp: SftpResource
) -> dg.SensorResult | dg.SkipReason:
    return evaluate_inbox(context, sftp, InboxSensorConfig())


def evaluate_inbox(
    context: dg.SensorEvaluationContext, sftp: SftpResource, config: InboxSensorConfig
) -> dg.SensorResult | dg.SkipReason:
    cursor = json.loads(context.cursor) if context.cursor else {}
    # Per provider since the scan shares its budget between providers; an older cursor is dropped.
    resume_after = cursor.get("resume_after")
    known = set(context.instance.get_dynamic_partitions(DELIVERIES.name))
    budget = ScanBudget(config.max_new_per_tick, config.max_probes_per_tick, config.max_seconds_per_tick)
    try:
        with sftp.session() as session:
            scan = scan_inbox(
                session,
                sftp.inbox_root.rstrip("/"),
                known,
                key_of=delivery_partition_key,
                resume_after=resume_after if isinstance(resume_after, dict) else None,
                budget=budget,
            )
    except SftpUnavailable as error:
        context.log.error(f"SFTP inbox unavailable, tick skipped: {error.reason}: {error.message}")
        return dg.SkipReason(f"SFTP inbox unavailable ({error.reason}): {error.message}")
    except OSError as error:
        context.log.error(f"SFTP inbox listing failed, tick skipped: {error.__class__.__name__}: {error}")
        return dg.SkipReason(f"SFTP inbox listing failed ({error.__class__.__name__})")

    if scan.ignored_names:
        context.log.warning(f"{scan.ignored_names} inbox folder(s) have names hdh-delivery/1 does not allow.")
    keys = [delivery_partition_key(found.provider, found.delivery_id) for found in scan.found]
    run_requests = [
        dg.RunRequest(
            run_key=f"{key}/{found.manifest_sha256 or 'no-manifest'}",
            partition_key=key,
            tags=delivery_run_tags(found.provider, found.delivery_id, found.manifest_sha256),
        )
        for key, found in zip(keys, scan.found, strict=True)
    ]
    new_cursor = json.dumps({"resume_after": scan.resume_after})
    if not run_requests:
        return dg.SensorResult(
            skip_reason=f"No new complete delivery ({scan.waiting} waiting for their signature).",
            cursor=new_cursor,
        )
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[DELIVERIES.build_add_request(keys)],
        cursor=new_cursor,
    )
