"""What the Dagster graph says of deliveries: the observed inbox, checks only where data came, run outcomes.

Real OpenSSH server, real deliveries, real Dagster instance, sensor ticks as the daemon runs them.
"""

from __future__ import annotations

import json

import dagster as dg
from deliveries import deliver, deliver_tables, upload, valid_rows, with_duplicate_key

from hdh_devtools.demo.daemonless import tick
from hdh_pipelines.definitions import defs
from hdh_pipelines.ingestion.assets import INBOX_KEY
from hdh_pipelines.ingestion.partitions import OUTCOME_TAG, REASON_TAG, SUMMARY_TAG

SENSOR = "sftp_inbox_sensor"
CHECK = "great_expectations_suite"


def raw_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", dataset.lower()])


def check_statuses(dagster: dg.DagsterInstance, dataset: str) -> dict[str, str]:
    """Run id -> status of the dataset's quality check records (PLANNED, SUCCEEDED, FAILED)."""
    key = dg.AssetCheckKey(raw_key(dataset), CHECK)
    records = dagster.event_log_storage.get_asset_check_execution_history(key, limit=10)
    return {record.run_id: record.status.value for record in records}


def refused(tmp_path, keys, sftp_settings, inbox, delivery_id):
    """A delivery whose signature does not verify: quarantined before anything is validated."""
    bad = deliver(tmp_path, keys, sftp_settings, inbox, delivery_id, names=[])
    (bad.directory / "manifest.json.sig").write_text("AAAA\n")
    upload(sftp_settings, bad, inbox)


def test_checks_and_run_tags_follow_each_delivery(tmp_path, keys, sftp_settings, inbox, hub_env, instance):
    beneficiaries = valid_rows("IR_BEN_R", 30)
    two = {"IR_BEN_R": beneficiaries, "IR_PHA_R": valid_rows("IR_PHA_R", 9)}
    deliver_tables(tmp_path, keys, sftp_settings, inbox, "two", two)
    duplicated = {"IR_BEN_R": with_duplicate_key(beneficiaries)}
    deliver_tables(tmp_path, keys, sftp_settings, inbox, "dup", duplicated)
    refused(tmp_path, keys, sftp_settings, inbox, "forged")

    outcome = tick(defs, instance, SENSOR)
    runs = {r.dagster_run.tags["dagster/partition"]: r for r in outcome.launched}
    tags = {key: instance.get_run_by_id(r.run_id).tags for key, r in runs.items()}

    # The step that validated reports the checks of the two delivered datasets, and no other.
    statuses = {d: check_statuses(instance, d) for d in ["IR_BEN_R", "IR_PHA_R", "ER_PRS_F", "T_MCOAAB"]}
    two_run, dup_run, forged_run = (runs[f"cnam/{d}"].run_id for d in ["two", "dup", "forged"])
    assert statuses["IR_PHA_R"] == {two_run: "SUCCEEDED"}
    # Held: its check failed with counts; quarantined: planned for the dataset its manifest lists,
    # never evaluated (the UI's "execution failed"), and for no other dataset.
    assert statuses["IR_BEN_R"] == {two_run: "SUCCEEDED", dup_run: "FAILED", forged_run: "PLANNED"}
    assert statuses["ER_PRS_F"] == {} and statuses["T_MCOAAB"] == {}
    assert runs["cnam/two"].success
    assert tags["cnam/two"][OUTCOME_TAG] == "published"
    assert tags["cnam/two"][SUMMARY_TAG] == "published: 2 table(s), 39 row(s)"

    # Held: the run says so and why; its check failed with counts, not "execution failed".
    assert not runs["cnam/dup"].success
    assert tags["cnam/dup"][OUTCOME_TAG] == "held"
    assert tags["cnam/dup"][REASON_TAG] == "blocking_expectation_failed"
    assert "IR_BEN_R" in tags["cnam/dup"][SUMMARY_TAG]

    # Quarantined: the reason in the tags.
    assert not runs["cnam/forged"].success
    assert tags["cnam/forged"][OUTCOME_TAG] == "quarantined"
    assert tags["cnam/forged"][REASON_TAG] == "bad_signature"
    # Tags hold reasons, counts and dataset names: never a delivered value.
    pseudonym = beneficiaries[0][0]
    assert pseudonym not in json.dumps([dict(t) for t in tags.values()])


def test_inbox_observation_versions_the_complete_deliveries(
    tmp_path,
    keys,
    sftp_settings,
    inbox,
    hub_env,
    instance,
):
    def latest_observation() -> dg.AssetObservation | None:
        records = instance.fetch_observations(INBOX_KEY, limit=1).records
        return records[0].asset_observation if records else None

    def latest_version():
        observation = latest_observation()
        return None if observation is None else observation.data_version

    assert INBOX_KEY in defs.resolve_all_asset_keys()
    assert INBOX_KEY in {dep for dep in defs.resolve_asset_graph().get(raw_key("IR_BEN_R")).parent_keys}
    first_tick = tick(defs, instance, SENSOR)
    assert first_tick.launched == [] and latest_version() is None

    refused(tmp_path, keys, sftp_settings, inbox, "first")
    one = tick(defs, instance, SENSOR, cursor=first_tick.cursor)
    first = latest_version()
    assert first is not None and len(one.launched) == 1

    # Nothing new: no observation, the version stays.
    tick(defs, instance, SENSOR, cursor=one.cursor)
    assert latest_version() == first

    refused(tmp_path, keys, sftp_settings, inbox, "second")
    tick(defs, instance, SENSOR, cursor=one.cursor)
    second = latest_observation()
    assert second.data_version not in (None, first)
    assert second.metadata["complete_deliveries"].value == 2
