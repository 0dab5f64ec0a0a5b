"""The targeting algorithms (dbt models under dbt_project/models/algorithms), run for real on planted cases.

One `dbt build` of the algorithms and everything upstream (models and data tests) on hand-made raw
tables. Every person below is planted either to be selected (a case) or to miss the rule by one
condition (a near miss); the tests check the exact rows. Pseudonyms are tags padded to 17 characters;
every person has twin rank 1 (so the person is the pseudonym || 1) except the twins of tag "AE".
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from dbt_inputs import (
    at,
    ben,
    claim,
    opt_out,
    pharmacy,
    presentation,
    psa,
    query,
    run_dbt,
    stay_b,
    stay_c,
    write_raw,
)

from hdh_pipelines.demo.synthetic import SYNTHETIC_DRUGS, Drug

METFORMIN, ATORVASTATIN = SYNTHETIC_DRUGS[3], SYNTHETIC_DRUGS[6]
# Two large packs (PHA_CND_TOP = 'GC' in the drug referential the test delivers).
METFORMIN_LARGE = Drug("3400999000109", METFORMIN.atc, "METFORMINE 1000 MG CPR B/90", 13.54)
ATORVASTATIN_LARGE = Drug("3400999000116", ATORVASTATIN.atc, "ATORVASTATINE 40 MG CPR B/90", 26.51)
PARACETAMOL = SYNTHETIC_DRUGS[0]


def person(tag: str, rank: int = 1) -> str:
    return psa(tag) + str(rank)


# (person tag, dispensing day, drug, qualifier, boxes) for each pharmacy claim.
DISPENSINGS = [
    # Treated diabetes: three distinct dates of A10.
    ("DA", "2025-01-10", METFORMIN, "0", "1"),
    ("DA", "2025-04-10", METFORMIN, "0", "1"),
    ("DA", "2025-07-10", METFORMIN, "0", "2"),
    # Treated diabetes: two dates, one of them a large pack.
    ("DB", "2025-03-05", METFORMIN_LARGE, "0", "1"),
    ("DB", "2025-09-05", METFORMIN, "0", "1"),
    # Near miss: two dates of standard packs.
    ("DC", "2025-02-01", METFORMIN, "0", "1"),
    ("DC", "2025-05-01", METFORMIN, "0", "1"),
    # Near miss: three dispensings on two distinct dates.
    ("DD", "2025-02-01", METFORMIN, "0", "1"),
    ("DD", "2025-02-01", METFORMIN, "0", "1"),
    ("DD", "2025-06-01", METFORMIN, "0", "1"),
    # Near miss: three dates across two years (two in 2024, one in 2025).
    ("DE", "2024-11-15", METFORMIN, "0", "1"),
    ("DE", "2024-12-15", METFORMIN, "0", "1"),
    ("DE", "2025-01-15", METFORMIN, "0", "1"),
    # Near miss: the third date is a line for information only, a fourth a regularisation.
    ("DF", "2025-01-20", METFORMIN, "0", "1"),
    ("DF", "2025-03-20", METFORMIN, "0", "1"),
    ("DF", "2025-05-20", METFORMIN, "71", "1"),
    ("DF", "2025-07-20", METFORMIN, "0", "-1"),
    # Near miss: three dates of another class (paracetamol).
    ("DH", "2025-01-02", PARACETAMOL, "0", "1"),
    ("DH", "2025-02-02", PARACETAMOL, "0", "1"),
    ("DH", "2025-03-02", PARACETAMOL, "0", "1"),
    # Near miss: would be selected, but opted out.
    ("DG", "2025-01-05", METFORMIN, "0", "1"),
    ("DG", "2025-02-05", METFORMIN, "0", "1"),
    ("DG", "2025-03-05", METFORMIN, "0", "1"),
    # Treated dyslipidaemia: three dates of C10; two dates with a large pack; near miss with two.
    ("LA", "2025-02-11", ATORVASTATIN, "0", "1"),
    ("LA", "2025-05-11", ATORVASTATIN, "0", "1"),
    ("LA", "2025-08-11", ATORVASTATIN, "0", "1"),
    ("LB", "2025-04-04", ATORVASTATIN, "0", "1"),
    ("LB", "2025-10-04", ATORVASTATIN_LARGE, "0", "1"),
    ("LC", "2025-04-04", ATORVASTATIN, "0", "1"),
    ("LC", "2025-10-04", ATORVASTATIN, "0", "1"),
]

# (PMSI year, RSA_NUM, person tag, principal diagnosis, related diagnosis, GHM, stay start) for each stay.
STAYS = [
    (2024, 2000000001, "AA", "I219", None, "05M042", "2024-06-01"),
    (2025, 1000000001, "AA", "I214", None, "05M042", "2025-03-10"),
    # Two coronary stays in the year: one row, counted twice, dated by the first.
    (2025, 1000000002, "AB", "I210", None, "05M042", "2025-05-01"),
    (2025, 1000000003, "AB", "I249", None, "05M042", "2025-02-01"),
    # Near misses: ACS only as the related diagnosis; an error stay; twins; angina (I20); opted out.
    (2025, 1000000004, "AC", "I10", "I21", "05M042", "2025-04-01"),
    (2025, 1000000005, "AD", "I211", None, "90Z00Z", "2025-04-02"),
    (2025, 1000000006, "AE", "I212", None, "05M042", "2025-04-03"),
    (2025, 1000000007, "AF", "I200", None, "05M042", "2025-04-04"),
    (2025, 1000000008, "AG", "I213", None, "05M042", "2025-04-05"),
]


def write_planted_inputs(raw: Path) -> None:
    tags = sorted({tag for tag, *_ in DISPENSINGS} | {tag for _, _, tag, *_ in STAYS})
    write_raw(raw, "IR_BEN_R", [ben(tag, "1") for tag in tags] + [ben("AE", "2")])
    write_raw(raw, "OPT_OUT", [opt_out("DG", "1", "2024-01-01"), opt_out("AG", "1", "2024-01-01")])
    drugs = {drug for *_, drug, _, _ in DISPENSINGS}
    large_packs = {METFORMIN_LARGE, ATORVASTATIN_LARGE}
    write_raw(
        raw,
        "IR_PHA_R",
        [presentation(d.cip13, d.atc, d.label, large_pack=d in large_packs) for d in sorted(drugs)],
    )
    claims, lines = [], []
    for number, (tag, day, drug, qualifier, boxes) in enumerate(DISPENSINGS, start=1):
        # The claim reaches the monthly flow after the dispensing.
        flow = (date.fromisoformat(day).replace(day=28) + timedelta(days=4)).replace(day=1).isoformat()
        claims.append(
            claim(number, flow, tag, "1", day, nature="3313", end="1600-01-01", qualifier=qualifier)
        )
        lines.append(pharmacy(number, flow, 1, drug, boxes=boxes))
    write_raw(raw, "ER_PRS_F", claims)
    write_raw(raw, "ER_PHA_F", lines)
    for year in (2024, 2025):
        stays = [stay for stay in STAYS if stay[0] == year]
        # One file per PMSI year in the same delivery, as the SNDS ships them.
        summaries = [stay_b(rsa, dp, dr=dr, ghm=ghm) for _, rsa, _, dp, dr, ghm, _ in stays]
        write_raw(raw, f"T_MCO{year % 100}B", summaries, file_name=f"t_mco{year}b")
        dates = [
            stay_c(rsa, tag, at(start), at(start) + timedelta(days=4)) for _, rsa, tag, *_, start in stays
        ]
        write_raw(raw, f"T_MCO{year % 100}C", dates, file_name=f"t_mco{year}c")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("algorithms")
    write_planted_inputs(folder / "raw")
    run_dbt(
        "build",
        "--select",
        "+path:models/algorithms",
        # Only the data tests whose every model is built.
        "--indirect-selection",
        "cautious",
        warehouse=folder / "warehouse.duckdb",
        raw_root=folder / "raw",
        target=folder / "target",
    )
    return folder / "warehouse.duckdb"


def selected(warehouse: Path, model: str) -> list[tuple]:
    return query(
        warehouse,
        f"select ben_idt_ano, year, first_evidence_date, evidence_count, algorithm_version "
        f"from algorithms.{model} order by all",
    )


def test_treated_diabetes(warehouse):
    assert selected(warehouse, "alg_treated_diabetes") == [
        (person("DA"), 2025, date(2025, 1, 10), 3, "1.0.0"),
        (person("DB"), 2025, date(2025, 3, 5), 2, "1.0.0"),
    ]


def test_treated_dyslipidaemia(warehouse):
    assert selected(warehouse, "alg_treated_dyslipidaemia") == [
        (person("LA"), 2025, date(2025, 2, 11), 3, "1.0.0"),
        (person("LB"), 2025, date(2025, 4, 4), 2, "1.0.0"),
    ]


def test_acute_coronary_syndrome(warehouse):
    assert selected(warehouse, "alg_acute_coronary_syndrome") == [
        (person("AA"), 2024, date(2024, 6, 1), 1, "1.0.0"),
        (person("AA"), 2025, date(2025, 3, 10), 1, "1.0.0"),
        (person("AB"), 2025, date(2025, 2, 1), 2, "1.0.0"),
    ]


def test_planted_near_misses_reached_the_marts(warehouse):
    """The near misses are near: their rows made it to the marts the algorithms read, and were turned down
    by the rule itself, except the opted-out persons, whom the marts already leave out."""
    dispensed = dict(
        query(warehouse, "select ben_idt_ano, count(*) from marts.drug_dispensations group by all")
    )
    assert {tag: dispensed.get(person(tag), 0) for tag in ("DC", "DD", "DE", "DF", "DH", "DG")} == {
        "DC": 2, "DD": 3, "DE": 3, "DF": 4, "DH": 3, "DG": 0,
    }  # fmt: skip
    stays = dict(query(warehouse, "select rsa_num, person_link_status from marts.hospital_stays"))
    assert {rsa: stays.get(rsa) for rsa in (1000000004, 1000000005, 1000000006, 1000000007, 1000000008)} == {
        1000000004: "linked", 1000000005: "linked", 1000000006: "ambiguous", 1000000007: "linked",
        1000000008: None,
    }  # fmt: skip


def test_algorithms_are_versioned_and_referenced(warehouse):
    manifest = json.loads((warehouse.parent / "target" / "manifest.json").read_text())
    algorithms = [node for node in manifest["nodes"].values() if node["schema"] == "algorithms"
                  and node["resource_type"] == "model"]  # fmt: skip
    assert {node["name"] for node in algorithms} == {
        "alg_treated_diabetes", "alg_treated_dyslipidaemia", "alg_acute_coronary_syndrome",
    }  # fmt: skip
    for node in algorithms:
        meta = node["config"]["meta"]
        assert meta["algorithm_version"] == "1.0.0"
        assert meta["reference"].startswith("Caisse nationale de l'Assurance Maladie")
        assert meta["inputs"]
        assert node["description"].strip()
