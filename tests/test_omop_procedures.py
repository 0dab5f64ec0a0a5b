"""OMOP procedure_occurrence from the CCAM acts of the PMSI (T_MCOaaA) and the DCIR (ER_CAM_F), planted.

One `dbt build` of procedure_occurrence and everything upstream (models, unit and data tests) on raw tables
written by hand here, not by the demo generator. Every act is planted either to become a procedure (with its
date, code, quantity and visit computed by hand) or to miss one rule by one condition: acts of a stay
transmitted twice (geographic FINESS of the duplicate referential), of an error stay (CMD 90), of twins'
ambiguous stay and of an opted-out person; an act dated by its delay on the discharge day (kept) and one day
after it (out); DCIR acts cancelled by a regularisation in a later flow (and one only partly regularised),
for information only (DPN_QLF = 71), without base act, without a care date, and a CCAM line whose claim never
arrived. The test compares the exact rows.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from dbt_inputs import (
    at,
    ben,
    ccam_line,
    claim,
    opt_out,
    psa,
    query,
    run_dbt,
    stay_a,
    stay_b,
    stay_c,
    write_raw,
)

LEGAL_APHP, GEOGRAPHIC_APHP, OTHER_HOSPITAL = "750712184", "750100042", "750001011"
STAY_DAYS = 4  # every planted stay ends four days after it starts

# One stay: PMSI year, RSA_NUM, person tag, start day, FINESS, T_MCOaaB overrides, its acts as
# (CCAM code, ENT_DAT_DEL, NBR_EXE_ACT, MOD_ACT).
STAYS = [
    # Retained stay: acts on the entry day, on the discharge day (delay = length, kept), one day after the
    # discharge (out), one without delay (read as 0), and the same act twice (two acts).
    (
        2025,
        1000000001,
        "PA",
        "2025-03-10",
        OTHER_HOSPITAL,
        {},
        [
            ("DZQM006", "0", "1", None),
            ("YYYY600", str(STAY_DAYS), "2", "J"),
            ("EBLA003", str(STAY_DAYS + 1), "1", None),
            ("ZCQK002", None, "1", None),
            ("DEQP003", "1", "1", None),
            ("DEQP003", "1", "1", None),
        ],
    ),
    # The same 2024 stay sent by AP-HP under its legal and geographic FINESS: the legal one's acts only.
    (2024, 2000000002, "PB", "2024-05-07", LEGAL_APHP, {}, [("HHFA016", "2", "1", None)]),
    (2024, 2000000003, "PB", "2024-05-07", GEOGRAPHIC_APHP, {}, [("HHFA016", "2", "1", None)]),
    # Near misses: an error stay (CMD 90); twins' stay (no person); an opted-out person's stay.
    (
        2025,
        1000000004,
        "PC",
        "2025-04-01",
        OTHER_HOSPITAL,
        {"GRG_GHM": "90Z00Z"},
        [("QZFA036", "0", "1", None)],
    ),
    (2025, 1000000005, "AE", "2025-04-02", OTHER_HOSPITAL, {}, [("QZFA036", "0", "1", None)]),
    (2025, 1000000006, "PG", "2025-04-03", OTHER_HOSPITAL, {}, [("QZFA036", "0", "1", None)]),
    # Case: a stay without GHM is still a visit, its act a procedure.
    (2025, 1000000007, "PC", "2025-06-01", OTHER_HOSPITAL, {"GRG_GHM": None}, [("JQGD010", "3", "1", None)]),
]

# One DCIR act: claim number, person tag, care day (None: not delivered), flow, CCAM code, PRS_ACT_QTE,
# ER_PRS_F overrides, ER_CAM_F overrides. A regularisation is the same act with a negative quantity later.
ACTS = [
    (1, "PA", "2025-02-03", "2025-03-01", "DEQP003", "1", {}, {}),
    # Cancelled by a regularisation two flows later.
    (2, "PD", "2025-04-07", "2025-05-01", "LAQK013", "1", {}, {}),
    (3, "PD", "2025-04-07", "2025-07-01", "LAQK013", "-1", {}, {}),
    # Partly regularised (2 then -1): one act left, from the first line.
    (4, "PH", "2025-05-12", "2025-06-01", "HBJD001", "2", {}, {}),
    (5, "PH", "2025-05-12", "2025-07-01", "HBJD001", "-1", {}, {}),
    # The same dental act on two teeth: two acts.
    (6, "PH", "2025-05-20", "2025-06-01", "HBJD001", "1", {}, {"CAM_QUA_DEN": "11"}),
    (7, "PH", "2025-05-20", "2025-06-01", "HBJD001", "1", {}, {"CAM_QUA_DEN": "21"}),
    # Near misses: for information only; no base act; a supplement; no care date; opted out.
    (8, "PE", "2025-03-03", "2025-04-01", "DEQP003", "1", {"DPN_QLF": "71"}, {}),
    (9, "PE", "2025-03-04", "2025-04-01", "DEQP003", "1", {"BSE_PRS_NAT": "0"}, {}),
    (10, "PE", "2025-03-05", "2025-04-01", "DEQP003", "1", {"CPL_MAJ_TOP": "2"}, {}),
    (11, "PE", None, "2025-04-01", "DEQP003", "1", {}, {}),
    (12, "PG", "2025-03-06", "2025-04-01", "DEQP003", "1", {}, {}),
    # Near miss of the regularisation: another activity code is another act, not a cancellation.
    (13, "PF", "2025-08-04", "2025-09-01", "QZFA036", "1", {}, {"CAM_ACT_COD": "1"}),
    (14, "PF", "2025-08-04", "2025-10-01", "QZFA036", "-1", {}, {"CAM_ACT_COD": "4"}),
]
# A CCAM line whose claim never arrived.
ORPHAN_LINE = 99

MCO, DCIR = 32855, 32810  # procedure_type_concept_id: Inpatient claim, Claim


def person(tag: str) -> str:
    return psa(tag) + "1"


def day(start: str, delay: int) -> str:
    return (at(start) + timedelta(days=delay)).date().isoformat()


# The hand computation: (person, date, CCAM code, type, quantity, visit start or None, modifier).
EXPECTED = sorted([
    (person("PA"), "2025-03-10", "DZQM006", MCO, 1, "2025-03-10", None),
    (person("PA"), day("2025-03-10", STAY_DAYS), "YYYY600", MCO, 2, "2025-03-10", "J"),
    (person("PA"), "2025-03-10", "ZCQK002", MCO, 1, "2025-03-10", None),
    (person("PA"), "2025-03-11", "DEQP003", MCO, 1, "2025-03-10", None),
    (person("PA"), "2025-03-11", "DEQP003", MCO, 1, "2025-03-10", None),
    (person("PB"), "2024-05-09", "HHFA016", MCO, 1, "2024-05-07", None),
    (person("PC"), "2025-06-04", "JQGD010", MCO, 1, "2025-06-01", None),
    (person("PA"), "2025-02-03", "DEQP003", DCIR, 1, None, None),
    (person("PH"), "2025-05-12", "HBJD001", DCIR, 1, None, None),
    (person("PH"), "2025-05-20", "HBJD001", DCIR, 1, None, None),
    (person("PH"), "2025-05-20", "HBJD001", DCIR, 1, None, None),
    (person("PF"), "2025-08-04", "QZFA036", DCIR, 1, None, None),
])  # fmt: skip


def write_planted_inputs(raw: Path) -> None:
    tags = sorted({row[2] for row in STAYS} | {row[1] for row in ACTS})
    write_raw(raw, "IR_BEN_R", [ben(tag, "1") for tag in tags] + [ben("AE", "2")])
    write_raw(raw, "OPT_OUT", [opt_out("PG", "1", "2024-01-01")])
    write_raw(
        raw,
        "FINESS_PMSI_DOUBLONS",
        [{"ETA_NUM": GEOGRAPHIC_APHP, "ETA_NUM_JUR": LEGAL_APHP, "ETA_GRP": "APHP", "ANN_DEB": "2005",
          "ANN_FIN": "2024"}],
    )  # fmt: skip
    claims, lines = [], []
    for number, tag, care, flow, code, quantity, claim_overrides, line_overrides in ACTS:
        row = claim(number, flow, tag, "1", care or "1600-01-01", nature="1351")
        claims.append({**row, "PRS_ACT_QTE": quantity, **claim_overrides})
        lines.append(ccam_line(number, flow, code, **line_overrides))
    lines.append(ccam_line(ORPHAN_LINE, "2025-04-01", "DEQP003"))
    write_raw(raw, "ER_PRS_F", claims)
    write_raw(raw, "ER_CAM_F", lines)
    for year in (2024, 2025):
        summaries, dates, acts = [], [], []
        for _, rsa, tag, start, eta, overrides, stay_acts in (s for s in STAYS if s[0] == year):
            summary = stay_b(rsa, "K359", days=str(STAY_DAYS))
            summaries.append({**summary, "ETA_NUM": eta, "SOR_ANN": str(year), **overrides})
            end = at(start) + timedelta(days=STAY_DAYS)
            dates.append({**stay_c(rsa, tag, at(start), end), "ETA_NUM": eta})
            acts += [
                {**stay_a(rsa, code, delay, times=times, modifier=modifier), "ETA_NUM": eta}
                for code, delay, times, modifier in stay_acts
            ]
        write_raw(raw, f"T_MCO{year % 100}B", summaries, file_name=f"t_mco{year}b")
        write_raw(raw, f"T_MCO{year % 100}C", dates, file_name=f"t_mco{year}c")
        write_raw(raw, f"T_MCO{year % 100}A", acts, file_name=f"t_mco{year}a")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("procedures")
    write_planted_inputs(folder / "raw")
    run_dbt(
        "build",
        "--select",
        "+omop_procedure_occurrence",
        # Only the data tests whose every model is built.
        "--indirect-selection",
        "cautious",
        warehouse=folder / "warehouse.duckdb",
        raw_root=folder / "raw",
        target=folder / "target",
    )
    return folder / "warehouse.duckdb"


def test_procedures_equal_the_hand_computation(warehouse):
    rows = query(
        warehouse,
        """
        select person.person_source_value, cast(procedure.procedure_date as varchar),
            procedure.procedure_source_value, procedure.procedure_type_concept_id, procedure.quantity,
            cast(visit.visit_start_date as varchar), procedure.modifier_source_value
        from omop.procedure_occurrence as procedure
        inner join omop.person as person using (person_id)
        left join omop.visit_occurrence as visit
            on visit.visit_occurrence_id = procedure.visit_occurrence_id
            and visit.person_id = procedure.person_id
        order by all
        """,
    )
    assert sorted(rows, key=repr) == sorted(EXPECTED, key=repr)


def test_procedures_are_complete_cdm_rows(warehouse):
    (count, ids, no_visit, concepts, ends) = query(
        warehouse,
        """
        select count(*), count(distinct procedure_occurrence_id),
            count(*) filter (where procedure_type_concept_id = 32855 and visit_occurrence_id is null),
            count(*) filter (where procedure_concept_id <> 0 or procedure_source_concept_id <> 0),
            count(*) filter (where procedure_end_date <> procedure_date)
        from omop.procedure_occurrence
        """,
    )[0]
    assert (count, ids, no_visit, concepts, ends) == (len(EXPECTED), len(EXPECTED), 0, 0, 0)
