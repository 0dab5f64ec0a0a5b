"""The opt-out purge sensor: every new version of the opt-out registry reaches every copy, unattended.

It watches the one model every purge reads, ``intermediate/int_opt_out_exclusions``
(rebuilt by the nightly refresh, or by anyone materialising it). Each tick
asks the instance for its latest materialisation after the cursor's storage
id; a newer one launches ``opt_out_purge_job`` once, with run key
``opt-out-purge-<storage id>``, so a cursor reset or a second daemon launches
nothing twice. The sensor reads only the event log, never the warehouse, so
it never contends for DuckDB's lock. The purge is idempotent: a run for a
registry that changed nothing rewrites nothing.
"""

import dagster as dg

from hdh_pipelines.core.constants import REQUESTER_TAG
from hdh_pipelines.rights.opt_out_purge import opt_out_purge_job
from hdh_pipelines.workspaces.assets import OPT_OUT_EXCLUSIONS_KEY
from hdh_pipelines.workspaces.purge import PURGE_REQUESTER


@dg.sensor(
    name="opt_out_purge_sensor",
    job=opt_out_purge_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches opt_out_purge_job after each new materialisation of "
    "intermediate/int_opt_out_exclusions: opted-out persons leave every workspace, data-challenge export "
    "and linkage output without anyone asking.",
)
def opt_out_purge_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    after = int(context.cursor) if context.cursor else None
    latest = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=OPT_OUT_EXCLUSIONS_KEY, after_storage_id=after), limit=1
    ).records
    if not latest:
        return dg.SkipReason("The opt-out registry has not been rebuilt since the last purge was launched.")
    storage_id = latest[0].storage_id
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"opt-out-purge-{storage_id}", tags={REQUESTER_TAG: PURGE_REQUESTER})
        ],
        cursor=str(storage_id),
    )
