"""The SNDS rules and the targeting algorithms, run for real on a planted population.

One `dbt build` of the algorithms and everything upstream (models, unit and data tests) on hand-written
raw tables, built here and not by the demo generator. Every person is planted either to be selected (a
case) or to miss one criterion by one condition (a near miss): thresholds ±1, a dispensing cancelled by a
regularisation in a later flow, lines for information only, of a public hospital billing directly
(ETE_IND_TAA 1 on the claim's ER_ETE_F line, next to 0 and a missing indicator, which count), without base
act or supplements, duplicate FINESS stays inside and outside the referential's years, an inter-hospital
duplicate, error and missing GHMs, invalid and missing chaining return codes, ALD of another nature or code,
a diagnosis only in a medical unit (T_MCOaaUM) of a retained or an excluded stay. The tests check the exact
rows (precision = recall = 1) and marts counts computed by hand. Pseudonyms are tags padded to 17
characters; every person has twin rank 1 (so the person is the pseudonym || 1) except the twins "AE".
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from html import escape
from pathlib import Path

import duckdb
import pytest
from dbt_inputs import (
    at,
    ben,
    claim,
    establishment,
    opt_out,
    pharmacy,
    presentation,
    psa,
    query,
    run_dbt,
    stay_b,
    stay_c,
    stay_d,
    stay_um,
    write_raw,
)

from hdh_pipelines.catalogue.site import write_site
from hdh_pipelines.catalogue.sources import algorithm_fiches
from hdh_pipelines.open_science.disclosure import PERSONS, TOTAL
from hdh_pipelines.open_science.indicators import IndicatorSpec, compute_indicator
from hdh_pipelines.open_science.synthetic import SYNTHETIC_DRUGS, Drug

METFORMIN, ATORVASTATIN = SYNTHETIC_DRUGS[3], SYNTHETIC_DRUGS[6]
# Two large packs (PHA_CND_TOP = 'GC' in the drug referential the test delivers).
METFORMIN_LARGE = Drug("3400999000109", METFORMIN.atc, "METFORMINE 1000 MG CPR B/90", 13.54)
ATORVASTATIN_LARGE = Drug("3400999000116", ATORVASTATIN.atc, "ATORVASTATINE 40 MG CPR B/90", 26.51)
PARACETAMOL = SYNTHETIC_DRUGS[0]
# ATC A10 but not an antidiabetic for the algorithm (SCALPEL-Extraction's Diabetes class excludes it).
BENFLUOREX = Drug("3400999000123", "A10BX06", "MEDIATOR 150 MG CPR B/30", 10.0)

LEGAL_APHP, GEOGRAPHIC_APHP, OTHER_HOSPITAL = "750712184", "750100042", "750001011"


def person(tag: str, rank: int = 1) -> str:
    return psa(tag) + str(rank)


def next_flow(day: str, months: int = 1) -> str:
    """The first day of the monthly flow ``months`` after the care day."""
    first = date.fromisoformat(day).replace(day=1)
    for _ in range(months):
        first = (first + timedelta(days=32)).replace(day=1)
    return first.isoformat()


# (person tag, dispensing day, drug, boxes, flow delay in months, claim overrides) for each pharmacy claim.
# A regularisation is the same dispensing (person, day, CIP13) with negative boxes in a later flow.
DISPENSINGS = [
    # Treated diabetes: three distinct dates of A10.
    ("DA", "2025-01-10", METFORMIN, "1", 1, {}),
    ("DA", "2025-04-10", METFORMIN, "1", 1, {}),
    ("DA", "2025-07-10", METFORMIN, "2", 1, {}),
    # Treated diabetes: two dates, one of them a large pack.
    ("DB", "2025-03-05", METFORMIN_LARGE, "1", 1, {}),
    ("DB", "2025-09-05", METFORMIN, "1", 1, {}),
    # Near miss: two dates of standard packs (threshold - 1).
    ("DC", "2025-02-01", METFORMIN, "1", 1, {}),
    ("DC", "2025-05-01", METFORMIN, "1", 1, {}),
    # Near miss: three dispensings on two distinct dates (one dispensing of 2 boxes on 2025-02-01).
    ("DD", "2025-02-01", METFORMIN, "1", 1, {}),
    ("DD", "2025-02-01", METFORMIN, "1", 1, {}),
    ("DD", "2025-06-01", METFORMIN, "1", 1, {}),
    # Near miss: three dates across two years (two in 2024, one in 2025): each year is judged on its own.
    ("DE", "2024-11-15", METFORMIN, "1", 1, {}),
    ("DE", "2024-12-15", METFORMIN, "1", 1, {}),
    ("DE", "2025-01-15", METFORMIN, "1", 1, {}),
    # Treated diabetes in 2024, and so in 2025 (the year after a treated year); near miss: two dates in 2024
    # (threshold - 1), selected for neither year.
    ("DW", "2024-02-10", METFORMIN, "1", 1, {}),
    ("DW", "2024-05-10", METFORMIN, "1", 1, {}),
    ("DW", "2024-08-10", METFORMIN, "1", 1, {}),
    ("DX", "2024-02-11", METFORMIN, "1", 1, {}),
    ("DX", "2024-05-11", METFORMIN, "1", 1, {}),
    # Near misses: the third date is a line for information only, without base act, or a supplement.
    ("DF", "2025-01-20", METFORMIN, "1", 1, {}),
    ("DF", "2025-03-20", METFORMIN, "1", 1, {}),
    ("DF", "2025-05-20", METFORMIN, "1", 1, {"DPN_QLF": "71"}),
    ("DL", "2025-01-21", METFORMIN, "1", 1, {}),
    ("DL", "2025-03-21", METFORMIN, "1", 1, {}),
    ("DL", "2025-05-21", METFORMIN, "1", 1, {"BSE_PRS_NAT": "0"}),
    ("DM", "2025-01-22", METFORMIN, "1", 1, {}),
    ("DM", "2025-03-22", METFORMIN, "1", 1, {}),
    ("DM", "2025-05-22", METFORMIN, "1", 1, {"CPL_MAJ_TOP": "2"}),
    # Near miss: three dates, the third from a public hospital billing directly (its ER_ETE_F line has
    # ETE_IND_TAA 1, ESTABLISHMENTS). Cases: the same with ETE_IND_TAA 0, and with the indicator missing.
    ("TA", "2025-01-25", METFORMIN, "1", 1, {}),
    ("TA", "2025-03-25", METFORMIN, "1", 1, {}),
    ("TA", "2025-07-25", METFORMIN, "1", 1, {}),
    ("TB", "2025-01-26", METFORMIN, "1", 1, {}),
    ("TB", "2025-03-26", METFORMIN, "1", 1, {}),
    ("TB", "2025-07-26", METFORMIN, "1", 1, {}),
    ("TC", "2025-01-27", METFORMIN, "1", 1, {}),
    ("TC", "2025-03-27", METFORMIN, "1", 1, {}),
    ("TC", "2025-07-27", METFORMIN, "1", 1, {}),
    # Near miss: three dates, the third cancelled by a regularisation two flows later.
    ("DJ", "2025-01-23", METFORMIN, "1", 1, {}),
    ("DJ", "2025-03-23", METFORMIN, "1", 1, {}),
    ("DJ", "2025-07-23", METFORMIN, "1", 1, {}),
    ("DJ", "2025-07-23", METFORMIN, "-1", 2, {}),
    # Case: three dates, the third only partly regularised (2 boxes, then -1): still dispensed.
    ("DK", "2025-01-24", METFORMIN, "1", 1, {}),
    ("DK", "2025-03-24", METFORMIN, "1", 1, {}),
    ("DK", "2025-07-24", METFORMIN, "2", 1, {}),
    ("DK", "2025-07-24", METFORMIN, "-1", 2, {}),
    # Near miss: three dates of another class (paracetamol).
    ("DH", "2025-01-02", PARACETAMOL, "1", 1, {}),
    ("DH", "2025-02-02", PARACETAMOL, "1", 1, {}),
    ("DH", "2025-03-02", PARACETAMOL, "1", 1, {}),
    # Near miss: three dates of benfluorex, whose ATC code is under A10.
    ("DV", "2025-01-03", BENFLUOREX, "1", 1, {}),
    ("DV", "2025-02-03", BENFLUOREX, "1", 1, {}),
    ("DV", "2025-03-03", BENFLUOREX, "1", 1, {}),
    # Near miss: would be selected, but opted out.
    ("DG", "2025-01-05", METFORMIN, "1", 1, {}),
    ("DG", "2025-02-05", METFORMIN, "1", 1, {}),
    ("DG", "2025-03-05", METFORMIN, "1", 1, {}),
    # Treated dyslipidaemia: three dates of C10; two dates with a large pack; near misses: two dates, and
    # three dates of which one cancelled by a regularisation in the next flow.
    ("LA", "2025-02-11", ATORVASTATIN, "1", 1, {}),
    ("LA", "2025-05-11", ATORVASTATIN, "1", 1, {}),
    ("LA", "2025-08-11", ATORVASTATIN, "1", 1, {}),
    ("LB", "2025-04-04", ATORVASTATIN, "1", 1, {}),
    ("LB", "2025-10-04", ATORVASTATIN_LARGE, "1", 1, {}),
    ("LC", "2025-04-04", ATORVASTATIN, "1", 1, {}),
    ("LC", "2025-10-04", ATORVASTATIN, "1", 1, {}),
    ("LD", "2025-02-12", ATORVASTATIN, "1", 1, {}),
    ("LD", "2025-05-12", ATORVASTATIN, "1", 1, {}),
    ("LD", "2025-07-12", ATORVASTATIN, "1", 1, {}),
    ("LD", "2025-07-12", ATORVASTATIN, "-1", 2, {}),
]

# The claims executed in an establishment, (person tag, dispensing day) -> ETE_IND_TAA of their ER_ETE_F
# line; every other claim has none (private practice), which flags nothing either.
ESTABLISHMENTS = {("TA", "2025-07-25"): "1", ("TB", "2025-07-26"): "0", ("TC", "2025-07-27"): None}

# One stay: PMSI year, RSA_NUM, person tag, DP, start day, and T_MCOaaB / T_MCOaaC overrides, DAS codes.
STAYS = [
    # Acute coronary syndrome.
    (2024, 2000000001, "AA", "I219", "2024-06-01", {}, {}, []),
    (2025, 1000000001, "AA", "I214", "2025-03-10", {}, {}, []),
    # Two coronary stays in the year: one row, counted twice, dated by the first.
    (2025, 1000000002, "AB", "I210", "2025-05-01", {}, {}, []),
    (2025, 1000000003, "AB", "I249", "2025-02-01", {}, {}, []),
    # Near misses: ACS only as the related diagnosis; an error GHM (CMD 90); twins; angina (I20); opted out.
    (2025, 1000000004, "AC", "I10", "2025-04-01", {"DGN_REL": "I21"}, {}, []),
    (2025, 1000000005, "AD", "I211", "2025-04-02", {"GRG_GHM": "90Z00Z"}, {}, []),
    (2025, 1000000006, "AE", "I212", "2025-04-03", {}, {}, []),
    (2025, 1000000007, "AF", "I200", "2025-04-04", {}, {}, []),
    (2025, 1000000008, "AG", "I213", "2025-04-05", {}, {}, []),
    # Case: no GHM delivered; the stay still counts.
    (2025, 1000000009, "AH", "I214", "2025-04-06", {"GRG_GHM": None}, {}, []),
    # The same 2024 stay transmitted twice by AP-HP (legal and geographic FINESS): counted once.
    (2024, 2000000010, "AI", "I214", "2024-05-07", {"ETA_NUM": LEGAL_APHP}, {}, []),
    (2024, 2000000011, "AI", "I214", "2024-05-07", {"ETA_NUM": GEOGRAPHIC_APHP}, {}, []),
    # Near miss of the duplicate rule: the geographic FINESS in 2025, after the referential's years.
    (2025, 1000000012, "AJ", "I214", "2025-05-08", {"ETA_NUM": GEOGRAPHIC_APHP}, {}, []),
    # Near misses: a chaining return code not 0; one not delivered; an inter-hospital duplicate (SEJ_TYP B).
    (2025, 1000000013, "AK", "I214", "2025-05-09", {}, {"NIR_RET": "1"}, []),
    (2025, 1000000014, "AL", "I214", "2025-05-10", {}, {"COH_SEX_RET": None}, []),
    (2025, 1000000015, "AM", "I214", "2025-05-11", {"SEJ_TYP": "B"}, {}, []),
    # Diabetes, hospital criterion: an associated diagnosis E11 in 2025; a related diagnosis E10 in 2024
    # (selects 2024 and 2025); near misses: E11 only in an error stay, and in a duplicate stay.
    (2025, 1000000016, "DQ", "K359", "2025-06-01", {}, {}, ["E119"]),
    (2024, 2000000017, "DR", "N390", "2024-09-01", {"DGN_REL": "E109"}, {}, []),
    (2025, 1000000018, "DS", "K359", "2025-06-02", {"GRG_GHM": "90H01Z"}, {}, ["E119"]),
    (2024, 2000000019, "DT", "K359", "2024-06-03", {"ETA_NUM": GEOGRAPHIC_APHP}, {}, ["E119"]),
    # Death at discharge (SOR_MOD 9), unknown to the referential.
    (2025, 1000000020, "PD", "I500", "2025-08-01", {"SOR_MOD": "9"}, {}, []),
    # Medical units (UNITS below). ACS as the DP of the second unit only: a case. Near misses: ACS as a unit's
    # related diagnosis only; as a unit's DP in an error stay and in a duplicate stay. Diabetes as a unit's DP
    # only: a near miss (the diabetes criterion reads the stay's DP, DR and DAS).
    (2025, 1000000021, "AN", "I10", "2025-06-10", {}, {}, []),
    (2025, 1000000022, "AO", "I10", "2025-06-11", {}, {}, []),
    (2025, 1000000023, "AP", "I10", "2025-06-12", {"GRG_GHM": "90Z00Z"}, {}, []),
    (2024, 2000000024, "AQ", "I10", "2024-06-13", {"ETA_NUM": GEOGRAPHIC_APHP}, {}, []),
    (2025, 1000000025, "DY", "K359", "2025-06-14", {}, {}, []),
]

# The medical units (T_MCOaaUM) of some stays: RSA_NUM -> [(unit DP, unit DR)], in unit order. The stay's DP
# is one of its units' DP, as in the PMSI: AA's and AB's coronary stays repeat theirs (counted once each).
UNITS = {
    1000000001: [("I214", None)],
    1000000002: [("I210", None), ("I10", None)],
    1000000003: [("K359", None), ("I249", None)],
    1000000021: [("I10", None), ("I214", None)],
    1000000022: [("I10", "I214")],
    1000000023: [("I10", None), ("I214", None)],
    2000000024: [("I10", None), ("I214", None)],
    1000000025: [("K359", None), ("E119", None)],
}

# Long-term illnesses: (tag, ICD-10, nature, start, end).
ILLNESSES = [
    ("DN", "E11", "41", "2025-03-01", "2030-03-01"),  # diabetes ALD from 2025: selected for 2025 only
    ("DO", "E11", "11", "2025-01-01", "1600-01-01"),  # near miss: a work-accident exemption, not an ALD
    ("DP", "I10", "41", "2020-01-01", "1600-01-01"),  # near miss: an ALD for hypertension
    ("DU", "E11", "41", "2015-01-01", "2023-12-31"),  # near miss: ended before the years observed
]


def write_planted_inputs(raw: Path) -> None:
    tags = sorted({row[0] for row in DISPENSINGS} | {row[2] for row in STAYS} | {row[0] for row in ILLNESSES})
    referential = [{**ben(tag, "1"), "BEN_IDT_ANO": person(tag)} for tag in tags]
    referential += [{**ben("AE", "2"), "BEN_IDT_ANO": person("AE", 2)}]
    # The delivered BEN_IDT_ANO breaks its rule once (a value of another person) and is missing once.
    by_tag = {row["BEN_NIR_PSA"]: row for row in referential}
    by_tag[psa("DC")]["BEN_IDT_ANO"] = person("DD")
    by_tag[psa("DH")]["BEN_IDT_ANO"] = None
    write_raw(raw, "IR_BEN_R", referential)
    write_raw(raw, "OPT_OUT", [opt_out("DG", "1", "2024-01-01"), opt_out("AG", "1", "2024-01-01")])
    drugs = {row[2] for row in DISPENSINGS}
    large_packs = {METFORMIN_LARGE, ATORVASTATIN_LARGE}
    write_raw(
        raw,
        "IR_PHA_R",
        [presentation(d.cip13, d.atc, d.label, large_pack=d in large_packs) for d in sorted(drugs)],
    )
    claims, lines, establishments = [], [], []
    for number, (tag, day, drug, boxes, delay, overrides) in enumerate(DISPENSINGS, start=1):
        flow = next_flow(day, delay)
        claims.append({**claim(number, flow, tag, "1", day, nature="3313", end="1600-01-01"), **overrides})
        lines.append(pharmacy(number, flow, 1, drug, boxes=boxes))
        if (tag, day) in ESTABLISHMENTS:
            establishments.append(establishment(number, flow, ESTABLISHMENTS[tag, day]))
    write_raw(raw, "ER_PRS_F", claims)
    write_raw(raw, "ER_PHA_F", lines)
    write_raw(raw, "ER_ETE_F", establishments)
    write_raw(
        raw,
        "IR_IMB_R",
        [
            {
                "BEN_NIR_PSA": psa(tag),
                "BEN_RNG_GEM": "1",
                "IMB_ALD_NUM": "8",
                "IMB_ALD_DTD": start,
                "IMB_ALD_DTF": end,
                "IMB_ETM_NAT": nature,
                "MED_MTF_COD": code,
                "MED_NCL_IDT": "CIM10",
            }
            for tag, code, nature, start, end in ILLNESSES
        ],
    )
    # The referential of duplicate FINESS, as a provider delivers it: the geographic FINESS up to 2024.
    write_raw(
        raw,
        "FINESS_PMSI_DOUBLONS",
        [
            {"ETA_NUM": GEOGRAPHIC_APHP, "ETA_NUM_JUR": LEGAL_APHP, "ETA_GRP": "APHP",
             "ANN_DEB": "2005", "ANN_FIN": "2024"},
            {"ETA_NUM": "130783236", "ETA_NUM_JUR": "130786049", "ETA_GRP": "APHM", "ANN_DEB": "2005",
             "ANN_FIN": None},
        ],
    )  # fmt: skip
    for year in (2024, 2025):
        stays = [stay for stay in STAYS if stay[0] == year]
        summaries, dates, associated, units = [], [], [], []
        for _, rsa, tag, dp, start, b_overrides, c_overrides, das in stays:
            eta = b_overrides.get("ETA_NUM", OTHER_HOSPITAL)
            summaries.append({**stay_b(rsa, dp), "SOR_ANN": str(year), **b_overrides})
            dates.append(
                {**stay_c(rsa, tag, at(start), at(start) + timedelta(days=4)), "ETA_NUM": eta, **c_overrides}
            )
            associated += [{**stay_d(rsa, rank, code), "ETA_NUM": eta} for rank, code in enumerate(das, 1)]
            units += [
                {**stay_um(rsa, number, unit_dp, unit_dr), "ETA_NUM": eta}
                for number, (unit_dp, unit_dr) in enumerate(UNITS.get(rsa, []), 1)
            ]
        # One file per PMSI year in the same delivery, as the SNDS ships them.
        write_raw(raw, f"T_MCO{year % 100}B", summaries, file_name=f"t_mco{year}b")
        write_raw(raw, f"T_MCO{year % 100}C", dates, file_name=f"t_mco{year}c")
        write_raw(raw, f"T_MCO{year % 100}D", associated, file_name=f"t_mco{year}d")
        write_raw(raw, f"T_MCO{year % 100}UM", units, file_name=f"t_mco{year}um")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("algorithms")
    write_planted_inputs(folder / "raw")
    return folder


@pytest.fixture(scope="module")
def warehouse(planted: Path) -> Path:
    run_dbt(
        "build",
        "--select",
        "+path:models/algorithms",
        "persons",
        "int_ben_idt_ano_conformity",
        # The OMOP tables the hand counts check.
        "+omop_drug_exposure",
        "+omop_visit_occurrence",
        "+omop_death",
        # Only the data tests whose every model is built.
        "--indirect-selection",
        "cautious",
        warehouse=planted / "warehouse.duckdb",
        raw_root=planted / "raw",
        target=planted / "target",
    )
    return planted / "warehouse.duckdb"


def selected(warehouse: Path, model: str) -> list[tuple]:
    return query(
        warehouse,
        f"select ben_idt_ano, year, first_evidence_date, evidence_count, algorithm_version "
        f"from algorithms.{model} order by all",
    )


def test_diabetes(warehouse):
    assert selected(warehouse, "alg_treated_diabetes") == [
        (person("DA"), 2025, date(2025, 1, 10), 3, "3.0.0"),
        (person("DB"), 2025, date(2025, 3, 5), 2, "3.0.0"),
        (person("DK"), 2025, date(2025, 1, 24), 3, "3.0.0"),
        (person("DN"), 2025, date(2025, 3, 1), 1, "3.0.0"),
        (person("DQ"), 2025, date(2025, 6, 1), 1, "3.0.0"),
        (person("DR"), 2024, date(2024, 9, 1), 1, "3.0.0"),
        (person("DR"), 2025, date(2024, 9, 1), 1, "3.0.0"),
        (person("DW"), 2024, date(2024, 2, 10), 3, "3.0.0"),
        (person("DW"), 2025, date(2024, 2, 10), 3, "3.0.0"),
        (person("TB"), 2025, date(2025, 1, 26), 3, "3.0.0"),
        (person("TC"), 2025, date(2025, 1, 27), 3, "3.0.0"),
    ]
    criteria = query(
        warehouse,
        "select ben_idt_ano, has_drug_criterion, has_ald_criterion, has_hospital_criterion "
        "from algorithms.alg_treated_diabetes where year = 2025 order by all",
    )
    assert criteria == [
        (person("DA"), True, False, False),
        (person("DB"), True, False, False),
        (person("DK"), True, False, False),
        (person("DN"), False, True, False),
        (person("DQ"), False, False, True),
        (person("DR"), False, False, True),
        (person("DW"), True, False, False),
        (person("TB"), True, False, False),
        (person("TC"), True, False, False),
    ]


def test_treated_dyslipidaemia(warehouse):
    assert selected(warehouse, "alg_treated_dyslipidaemia") == [
        (person("LA"), 2025, date(2025, 2, 11), 3, "2.0.0"),
        (person("LB"), 2025, date(2025, 4, 4), 2, "2.0.0"),
    ]


def test_acute_coronary_syndrome(warehouse):
    assert selected(warehouse, "alg_acute_coronary_syndrome") == [
        (person("AA"), 2024, date(2024, 6, 1), 1, "3.0.0"),
        (person("AA"), 2025, date(2025, 3, 10), 1, "3.0.0"),
        (person("AB"), 2025, date(2025, 2, 1), 2, "3.0.0"),
        (person("AH"), 2025, date(2025, 4, 6), 1, "3.0.0"),
        (person("AI"), 2024, date(2024, 5, 7), 1, "3.0.0"),
        (person("AJ"), 2025, date(2025, 5, 8), 1, "3.0.0"),
        (person("AN"), 2025, date(2025, 6, 10), 1, "3.0.0"),  # the DP of its second unit
    ]


def test_unit_diagnoses_are_those_of_retained_stays(warehouse):
    """T_MCOaaUM's DP and DR reach the stay's diagnoses as DP_UM and DR_UM, ranked by unit, for the retained
    stays only: the error stay's and the duplicate stay's units are not there."""
    units = query(
        warehouse,
        "select rsa_num, diagnosis_type, diagnosis_rank, icd10_code from marts.hospital_stay_diagnoses "
        "where diagnosis_type in ('DP_UM', 'DR_UM') order by all",
    )
    retained = {rsa: rows for rsa, rows in UNITS.items() if rsa not in (1000000023, 2000000024)}
    assert units == sorted(
        (rsa, kind, number, code)
        for rsa, rows in retained.items()
        for number, (unit_dp, unit_dr) in enumerate(rows, 1)
        for kind, code in (("DP_UM", unit_dp), ("DR_UM", unit_dr))
        if code is not None
    )


def test_dispensings_are_netted_and_counted_by_hand(warehouse):
    """Dispensings per person as computed by hand from DISPENSINGS: one per (day, CIP13) whose countable
    boxes sum to more than 0; DG opted out."""
    dispensed = dict(
        query(warehouse, "select ben_idt_ano, count(*) from marts.drug_dispensations group by all")
    )
    expected = {
        "DA": 3, "DB": 2, "DC": 2, "DD": 2, "DE": 3, "DF": 2, "DL": 2, "DM": 2, "DJ": 2, "DK": 3, "DH": 3,
        "DV": 3, "DW": 3, "DX": 2, "LA": 3, "LB": 2, "LC": 2, "LD": 2, "TA": 2, "TB": 3, "TC": 3,
    }  # fmt: skip
    assert dispensed == {person(tag): count for tag, count in expected.items()}
    netted = query(
        warehouse,
        "select ben_idt_ano, dispensing_date, boxes, netted_line_count, reimbursement_base, flx_dis_dtd "
        "from marts.drug_dispensations where ben_idt_ano in (?, ?) and netted_line_count > 1 order by all",
        [person("DK"), person("DD")],
    )
    assert netted == [
        (person("DD"), date(2025, 2, 1), 2, 2, pytest.approx(2 * METFORMIN.unit_price), date(2025, 3, 1)),
        (person("DK"), date(2025, 7, 24), 1, 2, pytest.approx(METFORMIN.unit_price), date(2025, 8, 1)),
    ]
    statuses = dict(
        query(warehouse, "select line_status, count(*) from intermediate.int_claims group by all")
    )
    assert statuses == {"countable": len(DISPENSINGS) - 4, "information_only": 1, "public_t2a": 1,
                        "no_base_act": 1, "supplement": 1}  # fmt: skip


def test_stays_follow_the_pmsi_rules_counted_by_hand(warehouse):
    statuses = dict(query(warehouse, "select rsa_num, stay_status from intermediate.int_pmsi_stays"))
    assert {rsa for rsa, status in statuses.items() if status != "retained"} == {
        1000000005, 1000000015, 1000000018, 1000000023, 2000000011, 2000000019, 2000000024,
    }  # fmt: skip
    assert statuses[1000000005] == statuses[1000000018] == statuses[1000000023] == "error_ghm"
    assert statuses[2000000011] == statuses[2000000019] == statuses[2000000024] == "duplicate_finess"
    assert statuses[1000000015] == "inter_hospital_duplicate"
    # The mart: every stay but those seven and the opted-out person's (AG).
    assert query(warehouse, "select count(*) from marts.hospital_stays") == [(len(STAYS) - 8,)]
    assert query(
        warehouse,
        "select ghm_status, ghm_code, is_error_stay from marts.hospital_stays where rsa_num = 1000000009",
    ) == [("missing", None, False)]
    links = dict(query(warehouse, "select rsa_num, person_link_status from marts.hospital_stays"))
    assert {rsa: links[rsa] for rsa in (1000000004, 1000000006, 1000000013, 1000000014)} == {
        1000000004: "linked", 1000000006: "ambiguous", 1000000013: "unusable_pseudonym",
        1000000014: "unusable_pseudonym",
    }  # fmt: skip
    chaining = dict(query(warehouse, "select rsa_num, chaining_status from intermediate.int_pmsi_stays"))
    assert (chaining[1000000013], chaining[1000000014]) == ("invalid_return_code", "missing_return_code")


def test_death_at_discharge_reaches_the_person(warehouse):
    assert query(
        warehouse,
        "select death_date, referential_death_date, hospital_death_date from marts.persons "
        "where ben_idt_ano = ?",
        [person("PD")],
    ) == [(date(2025, 8, 5), None, date(2025, 8, 5))]
    assert query(warehouse, "select count(*) from marts.persons where death_date is not null") == [(1,)]


def test_delivered_person_identifiers_are_checked_by_counts(warehouse):
    tags = {row[0] for row in DISPENSINGS} | {row[2] for row in STAYS} | {row[0] for row in ILLNESSES}
    assert query(
        warehouse,
        "select pseudonym_count, missing_count, mismatch_count from intermediate.int_ben_idt_ano_conformity",
    ) == [(len(tags) + 1, 1, 1)]


def test_a_later_month_regularisation_corrects_the_earlier_month(warehouse, planted, tmp_path):
    """Monthly runs: the July dispensings of DJ and LD are cancelled by August flows' regularisations
    (their lines are in the September flow), and TA's of the August flow is a public hospital's billed
    directly (its ER_ETE_F line in the same month); running August and September one by one leaves what
    the whole build holds."""
    monthly = tmp_path / "monthly.duckdb"
    months = [("2025-08-01", "2025-09-01"), ("2025-09-01", "2025-10-01")]
    for partition in months:
        run_dbt(
            "build",
            "--select",
            "+tag:hdh_partitioned",
            "--exclude",
            "resource_type:test resource_type:unit_test",
            warehouse=monthly,
            raw_root=planted / "raw",
            target=tmp_path / "target",
            partition=partition,
        )
    sql = (
        "select * exclude (netted_line_count) from marts.drug_dispensations "
        "where flx_dis_dtd >= '2025-08-01' and flx_dis_dtd < '2025-10-01' order by all"
    )
    assert query(monthly, sql) == query(warehouse, sql)
    cancelled = (
        "select count(*) from marts.drug_dispensations "
        "where ben_idt_ano in (?, ?) and dispensing_date >= '2025-07-01'"
    )
    assert query(monthly, cancelled, [person("DJ"), person("LD")]) == [(0,)]
    statuses = (
        "select dct_ord_num, ete_ind_taa, line_status from intermediate.int_claims "
        "where flx_dis_dtd >= '2025-08-01' and flx_dis_dtd < '2025-10-01' order by all"
    )
    assert query(monthly, statuses) == query(warehouse, statuses)
    assert {status for _, _, status in query(monthly, statuses)} == {"countable", "public_t2a"}
    assert query(monthly, cancelled, [person("TA"), person("TA")]) == [(0,)]


VERSIONS = {
    "alg_treated_diabetes": "3.0.0",
    "alg_acute_coronary_syndrome": "3.0.0",
    "alg_treated_dyslipidaemia": "2.0.0",
}


def test_algorithms_are_versioned_and_documented(warehouse):
    manifest = json.loads((warehouse.parent / "target" / "manifest.json").read_text())
    algorithms = [node for node in manifest["nodes"].values() if node["schema"] == "algorithms"
                  and node["resource_type"] == "model"]  # fmt: skip
    assert {node["name"] for node in algorithms} == set(VERSIONS)
    for node in algorithms:
        meta = node["config"]["meta"]
        assert meta["algorithm_version"] == VERSIONS[node["name"]]
        assert meta["reference"].startswith("Caisse nationale de l'Assurance Maladie")
        assert meta["inputs"]
        assert set(meta["fiche"]) == {"definition", "data", "codes", "source", "limits"}
        assert node["description"].strip()


def test_catalogue_site_renders_every_fiche(tmp_path):
    write_site(tmp_path, [], "No validation.")
    page = (tmp_path / "algorithms.html").read_text(encoding="utf-8")
    for fiche in algorithm_fiches():
        assert f'<section id="{fiche.name}">' in page
        assert fiche.version == VERSIONS[fiche.name]
        assert f"version {fiche.version}" in page
        assert all(fiche.parts.values()), fiche.name
        assert escape(fiche.parts["limits"]) in page


def indicator(warehouse: Path, **request) -> dict[tuple[str, ...], tuple[int, int]]:
    """The raw (unprotected) grid of an indicator request as {labels: (count, persons)}."""
    spec = IndicatorSpec(year_from=2024, year_to=2025, **request)
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        grid = compute_indicator(connection, spec)
    return {
        tuple(row[name] for name in spec.breakdown): (row["count"], row[PERSONS])
        for row in grid.to_dict("records")
    }


# By hand from the planted tables: the persons and stays each request must count, per year.
DIABETES = {"2024": {"DR", "DW"}, "2025": {"DA", "DB", "DK", "DN", "DQ", "DR", "DW", "TB", "TC"}}
CORONARY = {"2024": {"AA", "AI"}, "2025": {"AA", "AB", "AH", "AJ", "AN"}}
# A10 dispensed, netted positive and countable: DG opted out; DE in both years; DV's benfluorex is A10.
ANTIDIABETICS = {
    "2024": {"DE", "DW", "DX"},
    "2025": {"DA", "DB", "DC", "DD", "DE", "DF", "DL", "DM", "DJ", "DK", "DV", "TA", "TB", "TC"},
}  # fmt: skip
# I21* as the stay's principal diagnosis in the mart (error, duplicate, inter-hospital and opted-out stays
# are out), whether or not the stay's person is known (AE ambiguous twins, AK and AL unusable return codes);
# a unit's DP (AN) is not the stay's.
ACS_STAYS = {
    "2024": [("AA", 2000000001), ("AI", 2000000010)],
    "2025": [("AA", 1000000001), ("AB", 1000000002), ("AE", 1000000006), ("AH", 1000000009),
             ("AJ", 1000000012), ("AK", 1000000013), ("AL", 1000000014)],
}  # fmt: skip
UNKNOWN_PERSONS = {"AE", "AK", "AL"}


def test_patient_indicators_equal_the_hand_count(warehouse):
    for request, truth in [
        ({"algorithm": "alg_treated_diabetes"}, DIABETES),
        ({"algorithm": "alg_acute_coronary_syndrome"}, CORONARY),
        ({"atc_prefixes": ("A10",)}, ANTIDIABETICS),
        ({"atc_prefixes": ("C10",)}, {"2024": set(), "2025": {"LA", "LB", "LC", "LD"}}),
    ]:
        grid = indicator(warehouse, name="planted", unit="patients", breakdown=("year", "sex"), **request)
        # Every planted person is a man (sex code 1): women are explicit zeros.
        for year, persons in truth.items():
            assert grid[(year, "male")] == (len(persons), len(persons)), (request, year)
            assert grid[(year, "female")] == (0, 0), (request, year)
        total = sum(len(persons) for persons in truth.values())
        distinct = len(set().union(*truth.values()))
        assert grid[(TOTAL, TOTAL)] == (total, distinct), request


def test_stay_indicators_equal_the_hand_count(warehouse):
    grid = indicator(warehouse, name="planted", unit="stays", breakdown=("year",), icd10_prefixes=("I21",))
    for year, stays in ACS_STAYS.items():
        known = {tag for tag, _ in stays} - UNKNOWN_PERSONS
        assert grid[(year,)] == (len(stays), len(known)), year
    # Stays of the persons the coronary algorithm selects in that year, whatever their diagnosis.
    by_algorithm = indicator(
        warehouse, name="planted", unit="stays", breakdown=("year",), algorithm="alg_acute_coronary_syndrome"
    )
    assert by_algorithm[("2024",)] == (2, 2)
    assert by_algorithm[("2025",)] == (6, 5)  # AB's two stays (I210, I249), AA, AH, AJ, AN


def test_omop_counts_equal_the_hand_count(warehouse):
    dispensings = query(warehouse, "select count(*) from marts.drug_dispensations")[0][0]
    assert dispensings == 51  # the 21 persons' netted dispensings counted in the test above
    assert query(warehouse, "select count(*) from omop.drug_exposure") == [(dispensings,)]
    # Every visit is a stay of the mart whose person is known (AE, AK and AL have none).
    known_stays = query(warehouse, "select count(*) from marts.hospital_stays where ben_idt_ano is not null")
    assert known_stays == [(len(STAYS) - 8 - len(UNKNOWN_PERSONS),)]
    assert query(warehouse, "select count(*) from omop.visit_occurrence") == known_stays
    assert query(warehouse, "select count(*) from omop.death") == [(1,)]
