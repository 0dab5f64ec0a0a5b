"""The sensor and the ingestion asset on a real Dagster instance and a real OpenSSH server."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from deliveries import deliver, edit_manifest, raw_rows, upload

from hdh_devtools.demo.daemonless import tick
from hdh_pipelines.definitions import defs
from hdh_pipelines.ingestion.partitions import DELIVERIES
from hdh_pipelines.ingestion.storage import HubStorage

SENSOR = "sftp_inbox_sensor"


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    specs = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert {"raw/ir_ben_r", "raw/er_prs_f", "ingestion/delivery_quarantine"} <= specs


def test_good_and_bad_deliveries_in_one_tick(tmp_path, keys, sftp_settings, inbox, hub_env, instance):
    deliver(tmp_path, keys, sftp_settings, inbox, "good-1", rows=25)
    bad_signature = deliver(tmp_path, keys, sftp_settings, inbox, "bad-sig", names=[])
    (bad_signature.directory / "manifest.json.sig").write_text("AAAA\n")
    upload(sftp_settings, bad_signature, inbox)
    tampered = deliver(tmp_path, keys, sftp_settings, inbox, "bad-bytes")
    data_file = Path(inbox) / "cnam" / "bad-bytes" / tampered.manifest.files[0].name
    data = bytearray(data_file.read_bytes())
    data[-20] ^= 1
    data_file.write_bytes(bytes(data))
    unknown = deliver(tmp_path, keys, sftp_settings, inbox, "bad-dataset", names=[])
    edit_manifest(unknown, lambda d: d["files"][0].update(dataset="NOT_REGISTERED"), keys=keys)
    upload(sftp_settings, unknown, inbox)

    outcome = tick(defs, instance, SENSOR)
    by_partition = {r.dagster_run.tags["dagster/partition"]: r for r in outcome.launched}
    assert set(by_partition) == {"cnam/good-1", "cnam/bad-sig", "cnam/bad-bytes", "cnam/bad-dataset"}
    assert by_partition["cnam/good-1"].success
    expected = {
        "cnam/bad-sig": "bad_signature",
        "cnam/bad-bytes": "auth_failed",
        "cnam/bad-dataset": "unknown_dataset",
    }
    for partition, reason in expected.items():
        failed = by_partition[partition]
        assert not failed.success
        failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
        user_failure = failure.event_specific_data.user_failure_data
        assert user_failure.metadata["reason"].value == reason
        assert "quarantined" in user_failure.description
        observation = next(e for e in failed.all_events if e.event_type_value == "ASSET_OBSERVATION")
        assert observation.asset_key == dg.AssetKey(["ingestion", "delivery_quarantine"])

    storage = HubStorage(tmp_path / "private")
    assert len(raw_rows(storage, "IR_BEN_R")) == 25
    materialization = instance.get_latest_materialization_event(dg.AssetKey(["raw", "ir_ben_r"]))
    assert materialization.asset_materialization.metadata["dagster/row_count"].value == 25
    assert len(instance.get_dynamic_partitions(DELIVERIES.name)) == 4
    tags = by_partition["cnam/good-1"].dagster_run.tags
    assert tags["hdh/provider"] == "cnam" and tags["hdh/delivery"] == "good-1"


def test_part_files_and_unsigned_deliveries_are_ignored(
    tmp_path, keys, sftp_settings, inbox, hub_env, instance
):
    prepared = deliver(tmp_path, keys, sftp_settings, inbox, "slow", names=[])
    remote = f"{inbox}/cnam/slow"
    from hdh_deliver.transfer import sftp_session

    with sftp_session(sftp_settings) as session:
        # Data and manifest uploaded, signature still in flight as .part.
        for name in [prepared.manifest.files[0].name, "manifest.json"]:
            with open(prepared.directory / name, "rb") as handle:
                session.upload(handle, f"{remote}/{name}")
        with open(prepared.directory / "manifest.json.sig", "rb") as handle:
            session.client.putfo(handle, f"{remote}/manifest.json.sig.part")
    first = tick(defs, instance, SENSOR)
    assert first.launched == [] and "1 waiting" in first.skip_reason
    with sftp_session(sftp_settings) as session:
        session.client.posix_rename(f"{remote}/manifest.json.sig.part", f"{remote}/manifest.json.sig")
    second = tick(defs, instance, SENSOR, cursor=first.cursor)
    assert [r.success for r in second.launched] == [True]


def test_repeated_ticks_and_cursor_reset_request_nothing_twice(
    tmp_path, keys, sftp_settings, inbox, hub_env, instance
):
    deliver(tmp_path, keys, sftp_settings, inbox, "once")
    first = tick(defs, instance, SENSOR)
    assert len(first.launched) == 1
    again = tick(defs, instance, SENSOR, cursor=first.cursor)
    reset = tick(defs, instance, SENSOR, cursor=None)
    assert again.launched == [] and reset.launched == []
    assert len(instance.get_runs()) == 1


def test_rerun_of_a_partition_is_idempotent(tmp_path, keys, sftp_settings, inbox, hub_env, instance):
    deliver(tmp_path, keys, sftp_settings, inbox, "twice", rows=12)
    tick(defs, instance, SENSOR)
    job = defs.resolve_job_def("ingest_delivery_job")
    rerun = job.execute_in_process(instance=instance, partition_key="cnam/twice")
    assert rerun.success
    assert len(raw_rows(HubStorage(tmp_path / "private"), "IR_BEN_R")) == 12
    event = instance.get_latest_materialization_event(dg.AssetKey(["raw", "ir_ben_r"]))
    assert event.asset_materialization.metadata["already_loaded"].value is True


def test_server_down_skips_the_tick(hub_env, instance, monkeypatch):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    monkeypatch.setenv("HDH_SFTP_PORT", str(free_port))
    outcome = tick(defs, instance, SENSOR)
    assert outcome.launched == [] and "unreachable" in outcome.skip_reason


def test_host_key_mismatch_is_refused(tmp_path, hub_env, instance, monkeypatch, sftp_server):
    other = tmp_path / "known_hosts"
    fake_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHvbrJ5a0nE0fKJX7bcE0Wv+0M2xB9V0m2QDeZjV2nQk"
    other.write_text(f"[{sftp_server.host}]:{sftp_server.port} {fake_key}\n")
    monkeypatch.setenv("HDH_SFTP_KNOWN_HOSTS", str(other))
    outcome = tick(defs, instance, SENSOR)
    assert "host_key_mismatch" in outcome.skip_reason
    other.write_text("")
    assert "host_key_unknown" in tick(defs, instance, SENSOR).skip_reason


def test_quarantine_asset_lists_refusals(tmp_path, keys, sftp_settings, inbox, hub_env, instance):
    bad = deliver(tmp_path, keys, sftp_settings, inbox, "refused", names=[])
    (bad.directory / "manifest.json.sig").write_text("AAAA\n")
    upload(sftp_settings, bad, inbox)
    tick(defs, instance, SENSOR)
    result = dg.materialize(
        [defs.get_assets_def(dg.AssetKey(["ingestion", "delivery_quarantine"]))],
        instance=instance,
        resources=defs.resources,
    )
    metadata = result.asset_materializations_for_node("ingestion__delivery_quarantine")[0].metadata
    assert metadata["dagster/row_count"].value == 1
    assert metadata["by_reason"].value == {"bad_signature": 1}


def test_nightly_hour_is_configurable():
    from hdh_pipelines.schedules import nightly_cron

    assert nightly_cron("3") == "*/15 3,4,5 * * *"
    assert nightly_cron("23") == "*/15 23,0,1 * * *"
    with pytest.raises(ValueError):
        nightly_cron("24")
