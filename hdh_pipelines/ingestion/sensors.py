"""The SFTP inbox sensor: one partition and one run per complete delivery, never twice.

Each tick that finds new complete deliveries also reports an observation of
the ``ingestion/sftp_inbox`` source asset, whose data version is a digest of
every complete delivery seen, and plans each run on the raw tables and checks
of the datasets its manifest lists.

Known deliveries are the ``deliveries`` dynamic partitions stored in the
Dagster instance, so resetting the cursor cannot make the sensor request a
delivery again; the cursor only says where the previous, budget-limited tick
stopped. Run keys (provider, delivery_id, manifest digest) let Dagster drop
any duplicate request as well.
"""

import json

import dagster as dg

from hdh_deliver.transfer import SftpUnavailable
from hdh_pipelines.ingestion.assets import INBOX_KEY, ingest_delivery_assets, raw_asset_key
from hdh_pipelines.ingestion.inbox import ScanBudget, inbox_data_version, scan_inbox
from hdh_pipelines.ingestion.partitions import DELIVERIES, delivery_partition_key, delivery_run_tags
from hdh_pipelines.ingestion.resources import SftpResource
from hdh_pipelines.jobs import ingest_delivery_job
from hdh_pipelines.quality.checks import CHECK_NAME
from hdh_pipelines.registry import default_registry

# The event tag Dagster reads as an asset event's data version (AssetObservation.data_version);
# an observation reported by a sensor, rather than returned by an observe function, sets it itself.
DATA_VERSION_TAG = "dagster/data_version"


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
            **planned_selection(found.datasets),
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
        asset_events=[inbox_observation(known, keys, scan.waiting)],
        cursor=new_cursor,
    )


def planned_selection(datasets: tuple[str, ...]) -> dict[str, list]:
    """The raw assets and checks a delivery's run plans: those of the datasets its manifest lists.

    So a refused delivery marks only its own datasets' partitions and checks as
    failed. A manifest that does not parse names no dataset: the run plans every
    raw table (it will quarantine the delivery) and no check.
    """
    registry = default_registry()
    schemas = [registry.resolve(name) for name in datasets]
    keys = list(dict.fromkeys(raw_asset_key(schema.name) for schema in schemas if schema is not None))
    if not keys:
        return {"asset_selection": list(ingest_delivery_assets.keys), "asset_check_keys": []}
    return {"asset_selection": keys, "asset_check_keys": [dg.AssetCheckKey(key, CHECK_NAME) for key in keys]}


def inbox_observation(known: set[str], new_keys: list[str], waiting: int) -> dg.AssetObservation:
    """An observation of the SFTP inbox whose data version changes with each new complete delivery."""
    complete = known | set(new_keys)
    return dg.AssetObservation(
        asset_key=INBOX_KEY,
        tags={DATA_VERSION_TAG: inbox_data_version(complete)},
        metadata={
            "complete_deliveries": len(complete),
            "new_deliveries": len(new_keys),
            "waiting_for_signature": waiting,
            "new": dg.MetadataValue.table(
                [dg.TableRecord({"delivery": key}) for key in new_keys],
                schema=dg.TableSchema(
                    [dg.TableColumn("delivery", "string", description="<provider>/<delivery_id>")]
                ),
            ),
        },
    )
