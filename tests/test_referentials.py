"""The referentials (IR_PHA_R, IR_CIM_V) delivered like any dataset, and what is built from them: ATC per
dispensation, the unmapped-ATC asset check, OMOP drug_exposure quantity and duration, death and cdm_source.

One real `dbt build` on a hand-built population, independent of the demo generator: real CIP13 codes
(BDPM presentations) in a hand-built drug referential delivered twice (the second delivery corrects one
ATC class), one real code the referential does not hold, and deaths known from the beneficiary
referential, from PMSI discharges by death, or both, with near misses (a discharge home, a death stay of
twins the PMSI cannot tell apart).
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import dagster as dg
import duckdb
import pytest
from dbt_inputs import (
    at,
    ben,
    claim,
    diagnosis_code,
    pharmacy,
    presentation,
    psa,
    query,
    run_dbt,
    stay_b,
    stay_c,
    stay_d,
    write_raw,
)

from hdh_pipelines.core.partitions import MONTHS
from hdh_pipelines.normalisation.checks import (
    DRUG_DISPENSATIONS_KEY,
    UNMAPPED_ATC_FAIL_SHARE,
    UNMAPPED_ATC_WARN_SHARE,
    cip13_mapped_to_atc,
    month_coverage,
)
from hdh_pipelines.normalisation.resources import WarehouseResource
from hdh_pipelines.registry import default_registry

FIRST = datetime(2026, 1, 5, 10, 0)
SECOND = datetime(2026, 2, 9, 16, 30)


class Pack(NamedTuple):
    cip13: str
    atc: str
    label: str
    unit_price: float


# Real presentations of the French public drug database (BDPM) with their ATC classes.
DOLIPRANE = Pack("3400935955838", "N02BE01", "DOLIPRANE 1000 MG CPR B/8", 2.18)
DAFALGAN = Pack("3400930170441", "N02BE01", "DAFALGAN 1000 MG CPR B/8", 2.18)
XANAX = Pack("3400932644551", "N05BA12", "XANAX 0,50 MG CPR B/30", 2.05)
VOLTARENE = Pack("3400932351176", "M01AB05", "VOLTARENE 50 MG CPR B/30", 3.20)
# Dispensed, but absent from the referential: no ATC class, no pack size.
NUROFEN = Pack("3400933964351", "", "NUROFEN 200 MG CPR", 2.50)


def write_inputs(raw: Path) -> None:
    first = {"delivery_id": "ref-1", "loaded_at": FIRST}
    second = {"delivery_id": "ref-2", "loaded_at": SECOND}
    write_raw(
        raw,
        "IR_PHA_R",
        [
            presentation(DOLIPRANE.cip13, "N02BE51", DOLIPRANE.label, units="8 CPR"),  # corrected in ref-2
            presentation(DAFALGAN.cip13, DAFALGAN.atc, DAFALGAN.label, units="8"),
            # The test treats this one as a large pack (three months a box).
            presentation(XANAX.cip13, XANAX.atc, XANAX.label, large_pack=True, units="90 CPR"),
        ],
        **first,
    )
    write_raw(
        raw,
        "IR_PHA_R",
        [
            presentation(DOLIPRANE.cip13, DOLIPRANE.atc, DOLIPRANE.label, units="8 CPR"),
            # Several kinds of units: no unit count, but a standard pack's duration.
            presentation(VOLTARENE.cip13, VOLTARENE.atc, VOLTARENE.label, units="20 CPR + 10 SUPPO"),
        ],
        **second,
    )
    write_raw(
        raw,
        "IR_CIM_V",
        [diagnosis_code("I214", "Infarctus sous-endocardique aigu du myocarde"), diagnosis_code("J189", "?")],
        **first,
    )
    write_raw(raw, "IR_CIM_V", [diagnosis_code("J189", "Pneumopathie, sans précision")], **second)
    write_raw(
        raw,
        "IR_BEN_R",
        [
            ben("A", "1", death="2025-06-30"),  # died in hospital ten days earlier: the PMSI wins
            ben("B", "1", death="2025-05-01"),  # the referential's date comes first
            ben("C", "1"),  # known dead from the PMSI only
            ben("D", "1", death="2025-03-03"),  # known dead from the referential only
            ben("E", "1"),  # discharged home: alive
            ben("T", "1"),
            ben("T", "2"),  # twins: a death stay under their shared pseudonym reaches no one
        ],
        **first,
    )
    claims, lines = [], []

    def dispense(tag: str, flow: str, day: str, pack: Pack, boxes: str = "1", qualifier: str = "0") -> None:
        number = len(claims) + 1
        claims.append(
            claim(number, flow, tag, "1", day, nature="3313", end="1600-01-01", qualifier=qualifier)
        )
        lines.append(pharmacy(number, flow, 1, pack, boxes=boxes))

    # Flow of 2025-02: everything dispensed is mapped (pass); the unmapped lines are for information
    # only or a regularisation, which do not count.
    dispense("A", "2025-02-01", "2025-01-10", DOLIPRANE, boxes="2")
    dispense("A", "2025-02-01", "2025-01-11", XANAX)
    dispense("A", "2025-02-01", "2025-01-12", VOLTARENE)
    dispense("A", "2025-02-01", "2025-01-13", NUROFEN, qualifier="71")
    dispense("A", "2025-02-01", "2025-01-14", NUROFEN, boxes="-1")
    # Flow of 2025-03: 50 lines on 28 days are 28 dispensings; 1 unmapped dispensing of 29 (3.4 %),
    # 2 unmapped boxes of 52 (3.8 %): a warning.
    for day in range(50):
        dispense("B", "2025-03-01", (date(2025, 2, 1) + timedelta(days=day % 28)).isoformat(), DAFALGAN)
    dispense("B", "2025-03-01", "2025-02-20", NUROFEN, boxes="2")
    # Flow of 2025-04: 1 unmapped line of 21 (4.8 %, a warning alone), but 3 boxes of 23 (13 %): a failure.
    for day in range(20):
        dispense("E", "2025-04-01", (date(2025, 3, 1) + timedelta(days=day)).isoformat(), DAFALGAN)
    dispense("E", "2025-04-01", "2025-03-25", NUROFEN, boxes="3")
    write_raw(raw, "ER_PRS_F", claims, **first)
    write_raw(raw, "ER_PHA_F", lines, **first)
    # (RSA_NUM, pseudonym tag, start, end, discharge mode)
    stays = [
        (1000000001, "A", "2025-06-10", "2025-06-20", "9"),
        (1000000002, "B", "2025-05-02", "2025-05-10", "9"),
        (1000000003, "C", "2025-04-01", "2025-04-04", "9"),
        (1000000004, "E", "2025-04-01", "2025-04-04", "8"),
        (1000000005, "T", "2025-04-01", "2025-04-05", "9"),
    ]
    summaries = []
    for rsa, _, _, _, mode in stays:
        summary = stay_b(rsa, "J189")
        summary["SOR_MOD"] = mode
        summaries.append(summary)
    write_raw(raw, "T_MCO25B", summaries, **first)
    write_raw(raw, "T_MCO25C", [stay_c(rsa, tag, at(s), at(e)) for rsa, tag, s, e, _ in stays], **first)
    # A code the ICD-10 nomenclature does not hold: no label.
    write_raw(raw, "T_MCO25D", [stay_d(1000000001, 1, "I10")], **first)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("referentials")
    write_inputs(folder / "raw")
    run_dbt(
        "build",
        "--select",
        "+path:models/marts/omop",
        "--indirect-selection",
        "cautious",
        warehouse=folder / "warehouse.duckdb",
        raw_root=folder / "raw",
        target=folder / "target",
    )
    return folder / "warehouse.duckdb"


def test_referentials_are_registered_datasets_with_the_reference_columns():
    registry = default_registry()
    reference = Path(__file__).resolve().parents[2] / "shared/reference/snds/synthetic-snds/nomenclatures"
    for name, path in (("IR_PHA_R", "DREES/IR_PHA_R.json"), ("IR_CIM_V", "ORAVAL/IR_CIM_V.json")):
        schema = registry.resolve(name)
        expected = json.loads((reference / path).read_text(encoding="utf-8"))
        assert [f.name for f in schema.fields] == [f["name"] for f in expected["fields"]]
        assert [f.type for f in schema.fields] == [f["type"] for f in expected["fields"]]
        assert list(schema.primary_key) == expected["primaryKey"]
        assert all(f.description for f in schema.fields)
        assert schema.event_date is None and schema.person_id == ()


def test_latest_referential_delivery_wins_per_code(warehouse):
    assert query(
        warehouse, "select pha_cip_c13, pha_atc_c07, hdh_delivery_id from staging.stg_ir_pha_r order by 1"
    ) == [
        (int(DAFALGAN.cip13), DAFALGAN.atc, "ref-1"),  # only in the first delivery: kept
        (int(VOLTARENE.cip13), VOLTARENE.atc, "ref-2"),
        (int(XANAX.cip13), XANAX.atc, "ref-1"),
        (int(DOLIPRANE.cip13), DOLIPRANE.atc, "ref-2"),  # corrected by the second delivery
    ]
    assert query(
        warehouse, "select cim_cod, cim_lib, hdh_delivery_id from staging.stg_ir_cim_v order by 1"
    ) == [
        ("I214", "Infarctus sous-endocardique aigu du myocarde", "ref-1"),
        ("J189", "Pneumopathie, sans précision", "ref-2"),
    ]


def test_diagnoses_take_their_label_from_the_icd10_nomenclature(warehouse):
    assert query(
        warehouse,
        "select diagnosis_type, icd10_code, icd10_label, count(*) from marts.hospital_stay_diagnoses "
        "group by all order by all",
    ) == [("DAS", "I10", None, 1), ("DP", "J189", "Pneumopathie, sans précision", 5)]


def test_dispensations_take_their_atc_class_from_the_referential(warehouse):
    assert query(
        warehouse,
        "select cip13, atc_code, count(*) from marts.drug_dispensations group by all order by 1",
    ) == [
        # One row per dispensing (person, day, CIP13): B's 50 lines fall on 28 days, E's 20 on 20.
        (DAFALGAN.cip13, DAFALGAN.atc, 48),
        (VOLTARENE.cip13, VOLTARENE.atc, 1),
        (XANAX.cip13, XANAX.atc, 1),
        # Its line for information only and its lone negative line are no dispensing.
        (NUROFEN.cip13, None, 2),
        (DOLIPRANE.cip13, DOLIPRANE.atc, 1),
    ]


def test_drug_exposure_quantity_days_supply_and_end_date(warehouse):
    assert query(
        warehouse,
        "select drug_source_value, atc_source_value, quantity, days_supply, drug_exposure_start_date, "
        "drug_exposure_end_date from omop.drug_exposure "
        "where drug_exposure_start_date < date '2025-01-20' or drug_source_value = ? order by all",
        [NUROFEN.cip13],
    ) == [
        # Units listed as "20 CPR + 10 SUPPO": no unit count, a standard pack's 30 days.
        (VOLTARENE.cip13, VOLTARENE.atc, None, 30, date(2025, 1, 12), date(2025, 2, 10)),
        # A large pack: 90 days.
        (XANAX.cip13, XANAX.atc, 90.0, 90, date(2025, 1, 11), date(2025, 4, 10)),
        # Not in the referential: no pack size, the exposure ends the day it starts.
        (NUROFEN.cip13, None, None, None, date(2025, 2, 20), date(2025, 2, 20)),
        (NUROFEN.cip13, None, None, None, date(2025, 3, 25), date(2025, 3, 25)),
        # Two boxes of 8 tablets, a standard pack each: 16 units, 60 days, ending 59 days later.
        (DOLIPRANE.cip13, DOLIPRANE.atc, 16.0, 60, date(2025, 1, 10), date(2025, 3, 10)),
    ]


def test_death_from_the_referential_and_the_pmsi_earliest_wins(warehouse):
    assert query(
        warehouse,
        "select p.person_source_value, d.death_date, d.death_type_concept_id "
        "from omop.death d join omop.person p using (person_id) order by 1",
    ) == [
        (psa("A") + "1", date(2025, 6, 20), 32810),
        (psa("B") + "1", date(2025, 5, 1), 32879),
        (psa("C") + "1", date(2025, 4, 4), 32810),
        (psa("D") + "1", date(2025, 3, 3), 32879),
    ]


def test_cdm_source_describes_the_instance(warehouse):
    assert query(
        warehouse,
        "select source_release_date, cdm_release_date = current_date, cdm_version, cdm_version_concept_id, "
        "vocabulary_version from omop.cdm_source",
    ) == [(SECOND.date(), True, "5.4", 756265, "none loaded")]


def test_unmapped_shares_per_month(warehouse):
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        months = month_coverage(connection, date(2025, 2, 1), date(2025, 5, 1))
    assert [(m.month, m.lines, m.unmapped_lines, m.boxes, m.unmapped_boxes) for m in months] == [
        (date(2025, 2, 1), 3, 0, 4, 0),
        (date(2025, 3, 1), 29, 1, 52, 2),
        (date(2025, 4, 1), 21, 1, 23, 3),
    ]
    assert months[0].unmapped_share == 0
    assert UNMAPPED_ATC_WARN_SHARE < months[1].unmapped_share < UNMAPPED_ATC_FAIL_SHARE
    assert months[2].unmapped_line_share < UNMAPPED_ATC_FAIL_SHARE < months[2].unmapped_box_share


@pytest.mark.parametrize(
    ("month", "passed", "severity"),
    [
        ("2025-02-01", True, dg.AssetCheckSeverity.ERROR),
        ("2025-03-01", False, dg.AssetCheckSeverity.WARN),
        ("2025-04-01", False, dg.AssetCheckSeverity.ERROR),
    ],
)
def test_the_asset_check_passes_warns_or_fails_per_month(warehouse, month, passed, severity):
    defs = dg.Definitions(
        assets=[dg.AssetSpec(DRUG_DISPENSATIONS_KEY, partitions_def=MONTHS)],
        asset_checks=[cip13_mapped_to_atc],
        resources={"warehouse": WarehouseResource(path=str(warehouse))},
    )
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_check_selection={cip13_mapped_to_atc.check_key}
    )
    with dg.instance_for_test() as instance:
        # The partition as a run tag: the job holds the check alone, with no asset to validate a key against.
        result = job.execute_in_process(
            instance=instance, tags={"dagster/partition": month}, raise_on_error=False
        )
    (evaluation,) = result.get_asset_check_evaluations()
    # A blocking failure fails the step (and the run); the evaluation is recorded all the same.
    assert result.success is passed or severity == dg.AssetCheckSeverity.WARN
    assert evaluation.passed is passed
    assert evaluation.severity == severity
    assert evaluation.partition == month
    metadata = {key: value.value for key, value in evaluation.metadata.items()}
    # Counts and shares only: no code in the metadata or the description.
    assert not any(pack.cip13 in str(metadata) for pack in (DOLIPRANE, DAFALGAN, XANAX, VOLTARENE, NUROFEN))
    assert metadata["months"] == 1 and metadata["worst_month"] == month[:7]
