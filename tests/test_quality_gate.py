"""The quality gate between delivery and raw tables: held on blocking failures, reported as asset checks."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
from deliveries import columns_of, deliver_tables, ingest, raw_rows, valid_rows, with_duplicate_key

from hdh_devtools.demo.daemonless import tick
from hdh_pipelines.definitions import defs
from hdh_pipelines.ingestion.storage import QUALITY_SUMMARY, HubStorage
from hdh_pipelines.normalisation.assets import normalisation_upstream
from hdh_pipelines.normalisation.resources import WarehouseResource

SENSOR = "sftp_inbox_sensor"
CHECK = dg.AssetCheckKey(dg.AssetKey(["raw", "ir_ben_r"]), "great_expectations_suite")


def test_clean_delivery_is_published_with_its_reports(tmp_path, keys, gated, sftp_settings, inbox):
    deliver_tables(tmp_path, keys, sftp_settings, inbox, "ok", {"IR_BEN_R": valid_rows("IR_BEN_R", 50)})
    report = ingest(sftp_settings, inbox, gated, "cnam", "ok")
    assert report.quality_passed == {"IR_BEN_R": True} and not report.held
    reports = json.loads((gated.storage.raw_dir("cnam", "ok") / QUALITY_SUMMARY).read_text())
    assert reports["IR_BEN_R"]["success"] and reports["IR_BEN_R"]["rows"] == 50
    assert not gated.storage.held_dir("cnam", "ok").exists()


def test_blocking_failure_holds_the_delivery_and_a_corrected_one_replaces_it(
    tmp_path, keys, gated, sftp_settings, inbox
):
    good = valid_rows("IR_BEN_R", 40)
    deliver_tables(tmp_path, keys, sftp_settings, inbox, "dup", {"IR_BEN_R": with_duplicate_key(good)})
    report = ingest(sftp_settings, inbox, gated, "cnam", "dup")
    assert report.held
    storage = gated.storage
    assert not storage.raw_dir("cnam", "dup").exists()
    assert raw_rows(storage, "IR_BEN_R") == []
    reports = storage.quality_summary("cnam", "dup")
    failed = [o for o in reports["IR_BEN_R"]["outcomes"] if o["success"] is False]
    assert [o["severity"] for o in failed] == ["error"]
    assert failed[0]["unexpected_count"] >= 1

    # The same delivery again: nothing reloaded, still held.
    again = ingest(sftp_settings, inbox, gated, "cnam", "dup")
    assert again.already_loaded and again.held

    deliver_tables(tmp_path, keys, sftp_settings, inbox, "dup-fixed", {"IR_BEN_R": good})
    fixed = ingest(sftp_settings, inbox, gated, "cnam", "dup-fixed")
    assert not fixed.held and len(raw_rows(storage, "IR_BEN_R")) == 40
    assert storage.held_dir("cnam", "dup").exists(), "the failed delivery stays visible with its reasons"


def test_detail_rows_are_matched_against_claims_already_published(
    tmp_path, keys, gated, sftp_settings, inbox
):
    claims = valid_rows("ER_PRS_F", 60)
    deliver_tables(
        tmp_path,
        keys,
        sftp_settings,
        inbox,
        "claims",
        {"IR_BEN_R": valid_rows("IR_BEN_R", 200), "ER_PRS_F": claims},
    )
    assert not ingest(sftp_settings, inbox, gated, "cnam", "claims").held

    claim_keys = {tuple(row[i] for i in _join_positions("ER_PRS_F")) for row in claims}
    positions = _join_positions("ER_PHA_F")
    pharmacy = [row for row in valid_rows("ER_PHA_F", 150) if tuple(row[i] for i in positions) in claim_keys]
    assert pharmacy, "the synthetic pharmacy rows of the first claims"
    deliver_tables(tmp_path, keys, sftp_settings, inbox, "pharmacy", {"ER_PHA_F": pharmacy})
    assert not ingest(sftp_settings, inbox, gated, "cnam", "pharmacy").held

    orphan = list(pharmacy[0])
    orphan[columns_of("ER_PHA_F").index("PRS_ORD_NUM")] = "999999"
    deliver_tables(tmp_path, keys, sftp_settings, inbox, "orphan", {"ER_PHA_F": [*pharmacy, orphan]})
    held = ingest(sftp_settings, inbox, gated, "cnam", "orphan")
    assert held.held
    outcome = next(
        o
        for o in gated.storage.quality_summary("cnam", "orphan")["ER_PHA_F"]["outcomes"]
        if o["name"] == "ER_PRS_F:orphans"
    )
    assert outcome["success"] is False and outcome["unexpected_count"] == 1


DCIR_KEYS = (
    "DCT_ORD_NUM",
    "FLX_DIS_DTD",
    "FLX_EMT_NUM",
    "FLX_EMT_ORD",
    "FLX_EMT_TYP",
    "FLX_TRT_DTD",
    "ORG_CLE_NUM",
    "PRS_ORD_NUM",
    "REM_TYP_AFF",
)


def _join_positions(dataset):
    columns = columns_of(dataset)
    return [columns.index(k) for k in DCIR_KEYS]


def test_the_asset_check_explains_a_held_delivery(
    tmp_path,
    keys,
    sftp_settings,
    inbox,
    hub_env,
    instance,
    monkeypatch,
):
    rows = valid_rows("IR_BEN_R", 30)
    deliver_tables(tmp_path, keys, sftp_settings, inbox, "good", {"IR_BEN_R": rows})
    deliver_tables(tmp_path, keys, sftp_settings, inbox, "bad", {"IR_BEN_R": with_duplicate_key(rows)})
    outcome = tick(defs, instance, SENSOR)
    runs = {r.dagster_run.tags["dagster/partition"]: r for r in outcome.launched}
    assert runs["cnam/good"].success and not runs["cnam/bad"].success

    evaluations = [
        e.event_specific_data
        for e in runs["cnam/bad"].all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert [e.asset_check_key for e in evaluations] == [CHECK]
    bad = evaluations[0]
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    metadata = bad.metadata
    assert metadata["failed_errors"].value == 1
    failure = next(v.value for k, v in metadata.items() if k.startswith("failed: "))
    assert failure["severity"] == "error" and failure["unexpected_count"] >= 1
    pseudonym = rows[0][columns_of("IR_BEN_R").index("BEN_NIR_PSA")]
    assert pseudonym not in json.dumps({k: str(v.value) for k, v in metadata.items()})
    assert metadata["data_docs"].value.endswith(".html")

    materialization = instance.get_latest_materialization_event(dg.AssetKey(["raw", "ir_ben_r"]))
    assert materialization.asset_materialization.metadata["quality"].value.startswith(("held", "published"))
    storage = HubStorage(tmp_path / "private")
    assert len(raw_rows(storage, "IR_BEN_R")) == 30
    assert storage.held_dir("cnam", "bad").exists()
    assert CHECK in {k for k in defs.resolve_asset_graph().asset_check_keys}

    # Downstream, the normalised referential holds the good delivery only.
    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("HDH_WAREHOUSE_PATH", str(warehouse))
    monkeypatch.setenv("HDH_RAW_ROOT", str(storage.raw_root))
    resources = {"dbt": defs.resources["dbt"], "warehouse": WarehouseResource(path=str(warehouse))}
    assert dg.materialize([normalisation_upstream], instance=instance, resources=resources).success
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        assert connection.execute("select count(*) from staging.stg_ir_ben_r").fetchone()[0] == 30
