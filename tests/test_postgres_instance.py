"""The production instance profile (deploy/dagster-postgres.yaml) on a real PostgreSQL server.

A private PostgreSQL on a free loopback port holds the runs, event logs and schedules; each test
gets its own database. Deliveries go through the real sshd and the sensor, then dbt builds the
delivered months, and two warehouse runs launched at once from two processes queue on the pool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import psycopg2
import pytest
import yaml
from dbt_inputs import RUN_ASSETS
from deliveries import build, columns_of, upload, valid_rows, write_csv
from ui_support import free_port

from hdh_deliver.provider import SourceFile
from hdh_devtools.demo.daemonless import tick
from hdh_devtools.postgres_server import (
    PG_SETTINGS,
    PostgresServer,
    start_postgres_server,
    stop_postgres_server,
)
from hdh_devtools.readiness import wait_for_exit
from hdh_pipelines.core.constants import WAREHOUSE_POOL
from hdh_pipelines.core.pools import set_pool_limits
from hdh_pipelines.definitions import defs
from hdh_pipelines.normalisation.assets import normalisation_monthly, normalisation_upstream
from hdh_pipelines.normalisation.resources import WAREHOUSE_WAIT_MESSAGE

REPO = Path(__file__).resolve().parents[1]
SQLITE_PROFILE = REPO / "dagster.yaml"
POSTGRES_PROFILE = REPO / "deploy" / "dagster-postgres.yaml"
# What only production sets; every other block must be the local profile's, word for word.
PRODUCTION_ONLY = {"storage", "run_coordinator", "run_monitoring"}
SENSOR = "sftp_inbox_sensor"
DELIVERED_MONTHS = ("2025-04", "2025-05")
CLAIMS = dg.AssetKey(["marts", "claims"])


def _below_tmp() -> Path:
    """A fresh folder directly in the system temp folder: pytest's own is closed to the server's
    OS account, which PostgreSQL runs as when the tests run as root."""
    return Path(tempfile.mkdtemp(prefix="hdh-pg-"))


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL on a free loopback port, stopped by PID at the end of the module."""
    root = _below_tmp()
    server = start_postgres_server(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root)


@pytest.fixture
def pg_home(tmp_path, postgres, monkeypatch) -> Path:
    """A DAGSTER_HOME with the production profile, on a database of its own; HDH_PG_* set."""
    database = f"dagster_{uuid.uuid4().hex[:12]}"
    postgres.create_database(database)
    for name, value in postgres.settings(database).items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(POSTGRES_PROFILE, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        set_pool_limits(instance)  # as scripts/instance.sh start does, before any run
    return home


def _rows_in_postgres(table: str) -> int:
    """Count rows of one of Dagster's tables straight from PostgreSQL, not through Dagster."""
    connection = psycopg2.connect(
        host=os.environ["HDH_PG_HOST"],
        port=int(os.environ["HDH_PG_PORT"]),
        user=os.environ["HDH_PG_USER"],
        password=os.environ["HDH_PG_PASSWORD"],
        dbname=os.environ["HDH_PG_DB"],
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"select count(*) from {table}")
            return cursor.fetchone()[0]
    finally:
        connection.close()


def test_the_profiles_differ_only_in_what_production_adds():
    local = yaml.safe_load(SQLITE_PROFILE.read_text())
    production = yaml.safe_load(POSTGRES_PROFILE.read_text())
    assert {k: v for k, v in production.items() if k not in PRODUCTION_ONLY} == local
    assert set(production) >= PRODUCTION_ONLY
    # The connection is read from the environment only: no host, account or password in the file.
    connection = production["storage"]["postgres"]["postgres_db"]
    assert all(set(value) == {"env"} for value in connection.values())
    assert {value["env"] for value in connection.values()} == set(PG_SETTINGS)


def test_the_instance_keeps_everything_in_postgres(pg_home):
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.event_log_storage.get_pool_config().default_pool_limit == 1
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_monitoring_enabled


def test_stale_pid_files_naming_other_processes_stop_nothing():
    """After a crash or a reboot, a PID file may name a PID the system has since given to another process:
    `scripts/instance.sh stop` must signal neither it nor its process group (daemon and webserver files),
    nor take it for the cluster's postgres (postmaster.pid)."""
    state = _below_tmp()
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)  # a group of its own, as the services
    try:
        for service in ("daemon", "webserver"):
            (state / f"{service}.pid").write_text(f"{other.pid}\n")
        data = state / "postgres" / "data"
        data.mkdir(parents=True)
        # postmaster.pid's first lines: PID, data folder, start time, port.
        (data / "postmaster.pid").write_text(f"{other.pid}\n{data}\n1764000000\n5432\n")
        assert stop_postgres_server(state / "postgres") is False
        environment = {**os.environ, "HDH_INSTANCE_DIR": str(state)}
        status = subprocess.run(
            [str(REPO / "scripts/instance.sh"), "status"], env=environment, capture_output=True, text=True
        )
        assert sorted(status.stdout.splitlines()) == ["daemon: stopped", "webserver: stopped"], status.stdout
        stopped = subprocess.run(
            [str(REPO / "scripts/instance.sh"), "stop"], env=environment, capture_output=True, text=True
        )
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "stopped" not in stopped.stdout, stopped.stdout
        assert other.poll() is None, "a stop signalled a process that is not the instance's"
    finally:
        other.kill()
        other.wait()
        shutil.rmtree(state)


@pytest.fixture
def hub_env(hub_env, monkeypatch) -> Path:
    """The ingestion's settings (tests/conftest.py) and the warehouse's, as an operator sets them; returns
    the private root."""
    private = Path(hub_env["HDH_PRIVATE_ROOT"])
    monkeypatch.setenv("HDH_RAW_ROOT", str(private / "raw"))
    monkeypatch.setenv("HDH_WAREHOUSE_PATH", str(private / "warehouse.duckdb"))
    return private


def _deliver(tmp_path, keys, sftp_settings, inbox) -> None:
    """One delivery of the beneficiaries and of their claims of ``DELIVERED_MONTHS``; one unsigned."""
    date_column = columns_of("ER_PRS_F").index("FLX_DIS_DTD")
    claims = [row for row in valid_rows("ER_PRS_F", 200) if row[date_column][:7] in DELIVERED_MONTHS]
    sources = [
        SourceFile(write_csv(tmp_path / "ir_ben_r.csv", "IR_BEN_R", valid_rows("IR_BEN_R", 200)), "IR_BEN_R"),
        SourceFile(write_csv(tmp_path / "er_prs_f.csv", "ER_PRS_F", claims), "ER_PRS_F"),
    ]
    upload(sftp_settings, build(tmp_path, keys, "cnam", "pg-1", sources), inbox)
    refused = build(tmp_path, keys, "cnam", "pg-unsigned", sources[:1])
    (refused.directory / "manifest.json.sig").write_text("AAAA\n")
    upload(sftp_settings, refused, inbox)


def _step_window(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    records = instance.get_records_for_run(run_id).records
    starts = [
        r.event_log_entry.timestamp
        for r in records
        if r.event_log_entry.dagster_event_type == dg.DagsterEventType.STEP_START
    ]
    ends = [
        r.event_log_entry.timestamp
        for r in records
        if r.event_log_entry.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS
    ]
    assert len(starts) == 1 and len(ends) == 1, "one dbt step per run"
    return starts[0], ends[0]


def _waited_for_the_warehouse(instance: dg.DagsterInstance, run_id: str) -> bool:
    return any(
        r.event_log_entry.user_message == WAREHOUSE_WAIT_MESSAGE
        for r in instance.get_records_for_run(run_id).records
    )


# dbt's start-up dominates each of the four dbt steps: minutes on a loaded two-core machine.
@pytest.mark.timeout(1500)
def test_deliveries_to_dbt_with_two_runs_at_once(tmp_path, keys, sftp_settings, inbox, hub_env, pg_home):
    _deliver(tmp_path, keys, sftp_settings, inbox)
    with dg.DagsterInstance.get() as instance:
        outcome = tick(defs, instance, SENSOR)
        by_partition = {r.dagster_run.tags["dagster/partition"]: r.success for r in outcome.launched}
        assert by_partition == {"cnam/pg-1": True, "cnam/pg-unsigned": False}

        first, last = f"{DELIVERED_MONTHS[0]}-01", f"{DELIVERED_MONTHS[-1]}-01"
        # The nightly job's dbt part up to the marts: staging, persons and the monthly models over
        # the delivered months. OMOP and the algorithms (a third dbt step) are left out for time.
        dbt_part = defs.resolve_job_def("nightly_refresh_job").get_subset(
            asset_selection={*normalisation_upstream.keys, *normalisation_monthly.keys}
        )
        nightly = dbt_part.execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
            raise_on_error=False,
        )
        assert nightly.success
        assert instance.get_materialized_partitions(CLAIMS) == {first, last}

    # Another process, another connection: the history is in PostgreSQL, not in this process.
    assert _rows_in_postgres("runs") == 3
    assert _rows_in_postgres("dynamic_partitions") == 2

    # Two independent models of one dbt asset, each its own run: both write the warehouse.
    selections = [["staging/stg_ir_ben_r"], ["staging/stg_opt_out"]]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RUN_ASSETS, *selection],
            env=dict(os.environ),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for selection in selections
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-4000:]
    with dg.DagsterInstance.get() as instance:
        together = instance.get_runs(limit=2)
        assert {run.status for run in together} == {dg.DagsterRunStatus.SUCCESS}
        (start_a, end_a), (start_b, end_b) = (_step_window(instance, run.run_id) for run in together)
        if not (end_a <= start_b or end_b <= start_a):
            # Both claimed the pool's one slot at the same moment, which Dagster's claim (a read, then a
            # write, on an autocommit connection) lets through now and then: the warehouse's own lock must
            # then have kept them apart, the later one saying in its run's log that it waited.
            waited = [run.run_id for run in together if _waited_for_the_warehouse(instance, run.run_id)]
            assert len(waited) == 1, (
                "two steps wrote the warehouse at once: neither the pool nor the lock held"
            )
        assert instance.event_log_storage.get_concurrency_info("duckdb_warehouse").active_slot_count == 0
    with duckdb.connect(str(hub_env / "warehouse.duckdb"), read_only=True) as connection:
        assert connection.execute("select count(*) from staging.stg_ir_ben_r").fetchone()[0] == 200
        months = connection.execute("select distinct strftime(flx_dis_dtd, '%Y-%m') from marts.claims")
        assert sorted(m for (m,) in months.fetchall()) == list(DELIVERED_MONTHS)


def test_instance_script_starts_and_stops_the_stack():
    """`scripts/instance.sh start|stop` with its private PostgreSQL: daemon and webserver up, then gone."""
    state = _below_tmp()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HDH_PG_", "DAGSTER_HOME"))},
        "HDH_INSTANCE_DIR": str(state),
        "HDH_WEBSERVER_PORT": str(free_port()),
        "HDH_NO_SETUP": "1",  # this .venv is installed already
    }
    script = [str(REPO / "scripts" / "instance.sh")]
    try:
        started = subprocess.run(
            [*script, "start"], env=environment, capture_output=True, text=True, timeout=600, check=False
        )
        assert started.returncode == 0, started.stdout + started.stderr
        pids = {name: int((state / f"{name}.pid").read_text()) for name in ("daemon", "webserver")}
        settings = dict(line.split("=", 1) for line in (state / "postgres.env").read_text().splitlines())
        assert set(settings) == set(PG_SETTINGS) and settings["HDH_PG_HOST"] == "127.0.0.1"
        assert (state / "postgres.env").stat().st_mode & 0o077 == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{environment['HDH_WEBSERVER_PORT']}/server_info") as r:
            assert r.status == 200
        # The daemon writes its heartbeats to the production instance, i.e. to PostgreSQL.
        instance_env = {**environment, **settings, "DAGSTER_HOME": str(state / "dagster_home")}
        heartbeats = subprocess.run(
            [sys.executable, "-c", _WAIT_FOR_HEARTBEATS],
            env=instance_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert heartbeats.returncode == 0, heartbeats.stdout + heartbeats.stderr
        assert "QUEUED_RUN_COORDINATOR" in heartbeats.stdout and "SENSOR" in heartbeats.stdout
        # The script set the warehouse pool's limit itself, before any run could create it.
        assert f"{WAREHOUSE_POOL} slots 1 set" in heartbeats.stdout
    finally:
        stopped = subprocess.run(
            [*script, "stop"], env=environment, capture_output=True, text=True, timeout=300, check=False
        )
        shutil.rmtree(state, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "PostgreSQL stopped" in stopped.stdout
    # The script ends with SIGKILL for what SIGTERM did not stop: the kernel finishes that asynchronously,
    # and a killed process stays in /proc until its new parent reaps it, so wait for each one's exit itself.
    for name, pid in pids.items():
        assert wait_for_exit(pid, 30), f"{name} (pid {pid}) still running"


_WAIT_FOR_HEARTBEATS = """
import time
import dagster as dg
with dg.DagsterInstance.get() as instance:
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    deadline = time.monotonic() + 240
    while not instance.get_daemon_heartbeats() and time.monotonic() < deadline:
        time.sleep(1)
    print(sorted(instance.get_daemon_heartbeats()))
    info = instance.event_log_storage.get_concurrency_info("duckdb_warehouse")
    print("duckdb_warehouse slots", info.slot_count, "default" if info.using_default_limit else "set")
"""
