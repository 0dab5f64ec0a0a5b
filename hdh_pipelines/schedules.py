"""The nightly schedule. Its hour, time zone and look-back come from the environment at load time."""

import os
from datetime import datetime, timedelta

import dagster as dg

from hdh_pipelines.core.partitions import MONTHS
from hdh_pipelines.jobs import nightly_job

WINDOW_HOURS = 3
_UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def nightly_hour(hour: str | None = None) -> int:
    """``HDH_NIGHTLY_HOUR`` (0–23, default 2): when the night's refresh may start."""
    value = int(hour if hour is not None else os.environ.get("HDH_NIGHTLY_HOUR", "2"))
    if not 0 <= value <= 23:
        raise ValueError("HDH_NIGHTLY_HOUR must be an hour from 0 to 23")
    return value


def nightly_cron(hour: str | None = None) -> str:
    """Every quarter of an hour for the ``WINDOW_HOURS`` from the nightly hour: a tick that finds a
    delivery still being validated skips, the next one launches, and the run key keeps it to one a night."""
    start = nightly_hour(hour)
    hours = ",".join(str((start + h) % 24) for h in range(WINDOW_HOURS))
    return f"*/15 {hours} * * *"


def night_of(moment: datetime, hour: int) -> str:
    """The night a tick belongs to, named by the day it started (a window may cross midnight)."""
    return (moment - timedelta(hours=hour)).date().isoformat()


def lookback_months(value: str | None = None) -> int:
    """``HDH_NIGHTLY_LOOKBACK_MONTHS`` (default 3): SNDS flows keep arriving for months after the care."""
    months = int(value if value is not None else os.environ.get("HDH_NIGHTLY_LOOKBACK_MONTHS", "3"))
    if months < 1:
        raise ValueError("HDH_NIGHTLY_LOOKBACK_MONTHS must be at least 1")
    return months


def nightly_range(now: datetime, months: int) -> tuple[str, str]:
    """The first and last monthly partition keys a night rebuilds: the ``months`` up to ``now``'s."""
    keys = MONTHS.get_partition_keys(current_time=now)
    if not keys:
        raise ValueError(f"No monthly partition exists yet at {now:%Y-%m-%d} (see HDH_FIRST_MONTH).")
    recent = keys[-months:]
    return recent[0], recent[-1]


@dg.schedule(
    name="nightly_refresh",
    job=nightly_job,
    cron_schedule=nightly_cron(),
    execution_timezone=os.environ.get("HDH_TIMEZONE", "Europe/Paris"),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Rebuilds what depends on the raw tables once a night, after the day's deliveries, "
    "once no delivery is still being ingested and validated.",
)
def nightly_schedule(context: dg.ScheduleEvaluationContext):
    ingesting = context.instance.get_runs(
        filters=dg.RunsFilter(statuses=_UNFINISHED, tags={"hdh/kind": "ingestion"}), limit=1
    )
    if ingesting:
        # Its quality checks have not run yet: wait rather than build around it.
        return dg.SkipReason("A delivery is still being ingested and validated; the next tick retries.")
    first, last = nightly_range(context.scheduled_execution_time, lookback_months())
    return dg.RunRequest(
        run_key=f"nightly-{night_of(context.scheduled_execution_time, nightly_hour())}",
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )
