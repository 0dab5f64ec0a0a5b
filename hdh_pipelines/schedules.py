"""The nightly schedule. Its hour and time zone come from the environment at load time."""

import os

import dagster as dg

from hdh_pipelines.jobs import nightly_job


def nightly_cron(hour: str | None = None) -> str:
    """``HDH_NIGHTLY_HOUR`` (0–23, default 2) as a daily cron expression."""
    value = int(hour if hour is not None else os.environ.get("HDH_NIGHTLY_HOUR", "2"))
    if not 0 <= value <= 23:
        raise ValueError("HDH_NIGHTLY_HOUR must be an hour from 0 to 23")
    return f"0 {value} * * *"


nightly_schedule = dg.ScheduleDefinition(
    name="nightly_refresh",
    job=nightly_job,
    cron_schedule=nightly_cron(),
    execution_timezone=os.environ.get("HDH_TIMEZONE", "Europe/Paris"),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Rebuilds what depends on the raw tables once a night, after the day's deliveries.",
)
