"""Who may deliver what: a provider delivers only the datasets the registry allows it (issue 13 §2).

The attack reproduced: the research-cohort provider, a registered provider with
valid keys, sends an OPT_OUT file withdrawing a person's opt-out that the
national health insurance delivered. Ingestion must refuse it before
decrypting anything, and staging must read each dataset only from its
authoritative providers, so that such a file, had it reached the raw tables,
still could not bring the person back into the marts.
"""

from __future__ import annotations

import json

import pytest
from dbt_inputs import ben, opt_out, query, run_dbt, write_raw
from deliveries import build, columns_of, ingest, rejected, upload, write_csv

from hdh_deliver.errors import Reason
from hdh_deliver.provider import SourceFile
from hdh_pipelines.registry import DatasetRegistry, RegistryError, default_registry

COHORT = "chu-cohort"
OPTED_OUT = "A"


def _csv(tmp_path, name: str, dataset: str, rows: list[dict]):
    columns = columns_of(dataset)
    values = [[row.get(c) or "" for c in columns] for row in rows]
    return SourceFile(write_csv(tmp_path / f"{name}.csv", dataset, values), dataset)


def excluded(warehouse) -> set[str]:
    return {r[0][:1] for r in query(warehouse, "select ben_nir_psa from intermediate.int_opt_out_exclusions")}


def test_registry_names_providers_for_every_dataset():
    registry = default_registry()
    assert {name: registry.resolve(name).providers for name in registry.names()} == {
        "COHORT_EXT": (COHORT,),
        **{name: ("cnam",) for name in registry.names() if name != "COHORT_EXT"},
    }


@pytest.mark.parametrize(
    ("providers", "words"),
    [
        (None, '"providers" is missing'),
        ([], "non-empty"),
        (["Bad Name"], "does not allow"),
        (["x", "x"], "twice"),
    ],
)
def test_registry_refuses_a_schema_without_valid_providers(tmp_path, providers, words):
    document = dict(default_registry().resolve("OPT_OUT").raw)
    if providers is None:
        document.pop("providers")
    else:
        document["providers"] = providers
    (tmp_path / "OPT_OUT.json").write_text(json.dumps(document))
    with pytest.raises(RegistryError, match=words):
        DatasetRegistry.load(tmp_path)


def test_cohort_provider_cannot_withdraw_a_national_opt_out(tmp_path, keys, hub, sftp_settings, inbox):
    # The national health insurance delivers the referential and an active opt-out of person A.
    national = [
        _csv(tmp_path, "ben", "IR_BEN_R", [ben(OPTED_OUT, "1"), ben("B", "1")]),
        _csv(tmp_path, "opt", "OPT_OUT", [opt_out(OPTED_OUT, "1", "2024-01-01")]),
    ]
    upload(sftp_settings, build(tmp_path, keys, "cnam", "snds-1", national), inbox)
    ingest(sftp_settings, inbox, hub, "cnam", "snds-1")

    # The cohort provider, with its own valid signing key, withdraws it.
    withdrawal = [opt_out(OPTED_OUT, "1", "2024-01-01", status="WITHDRAWN")]
    forged = build(
        tmp_path,
        keys,
        COHORT,
        "withdraw-1",
        [_csv(tmp_path, "forged", "OPT_OUT", withdrawal)],
        signer="cohort",
    )
    upload(sftp_settings, forged, inbox)
    refusal = rejected(sftp_settings, inbox, hub, COHORT, "withdraw-1")
    assert refusal.reason == Reason.PROVIDER_NOT_AUTHORISED
    assert refusal.file == forged.manifest.files[0].name
    assert not (hub.storage.raw_root / COHORT).exists()

    warehouse, target = tmp_path / "warehouse.duckdb", tmp_path / "dbt-target"
    raw_root = hub.storage.raw_root
    run_dbt(
        "run", "--select", "+int_opt_out_exclusions", warehouse=warehouse, raw_root=raw_root, target=target
    )
    assert excluded(warehouse) == {OPTED_OUT}

    # Had the file reached the raw tables some other way, staging still reads OPT_OUT from cnam only.
    write_raw(raw_root, "OPT_OUT", withdrawal, provider=COHORT, delivery_id="slipped-in")
    run_dbt(
        "run", "--select", "+int_opt_out_exclusions", warehouse=warehouse, raw_root=raw_root, target=target
    )
    assert excluded(warehouse) == {OPTED_OUT}
    assert query(warehouse, "select distinct hdh_provider from staging.stg_opt_out") == [("cnam",)]


def test_refused_before_anything_is_downloaded(tmp_path, keys, hub, sftp_settings, inbox):
    """Only the signed manifest is read: the data file is not even on the server."""
    source = _csv(tmp_path, "ben", "IR_BEN_R", [ben("C", "1")])
    prepared = build(tmp_path, keys, COHORT, "ben-1", [source], signer="cohort")
    upload(sftp_settings, prepared, inbox, names=["manifest.json", "manifest.json.sig"])
    assert rejected(sftp_settings, inbox, hub, COHORT, "ben-1").reason == Reason.PROVIDER_NOT_AUTHORISED


def test_the_authorised_provider_delivers(tmp_path, keys, hub, sftp_settings, inbox):
    rows = {"COH_REC_ID": "r1"}
    source = SourceFile(
        write_csv(tmp_path / "c.csv", "COHORT_EXT", [[rows.get(c, "") for c in columns_of("COHORT_EXT")]]),
        "COHORT_EXT",
    )
    upload(sftp_settings, build(tmp_path, keys, COHORT, "c-1", [source], signer="cohort"), inbox)
    assert ingest(sftp_settings, inbox, hub, COHORT, "c-1").rows_by_dataset() == {"COHORT_EXT": 1}
