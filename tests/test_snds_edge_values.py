"""Values the SNDS really holds are published; near misses are still held, each for its own reason.

Every table here is built by hand from the SNDS's documented conventions, not by
the demo generator: regularisation lines with negative quantities and amounts,
zero quantities, Corsican FINESS numbers (2A…, 2B…), 10-character zero-padded
RSA indices, 4-character GHS codes below 1000, the sentinel dates 1600-01-01
(unknown), 0001-01-01 and 9999-12-31 (open end), an unknown birth year (1600),
twins sharing one BEN_NIR_PSA, the documented invalid pseudonym of the PMSI,
non-zero chaining return codes, SAS date-times and unpadded months, empty
optional cells, and key values beyond schema-snds's generator bounds.

Both corpora go the real way: ``hdh-deliver`` (the provider's command) encrypts,
signs and uploads them to the test sshd, and the hub's ingestion with its quality
gate verifies, loads and validates them. The edge corpus is published with only
the plausibility warnings it is meant to raise; the near-miss corpus is held, with
one blocking failure per planted value and nothing else.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from deliveries import columns_of, ingest, raw_rows, write_csv

from hdh_pipelines.core.sql import quote_identifier
from hdh_pipelines.quality.suites import (
    INVALID_SUFFIX,
    SEVERITIES,
    VALUE_SUFFIX,
    column_sql,
    handwritten_expectations,
)
from hdh_pipelines.registry import default_registry
from hdh_pipelines.registry.generate import GENERATED_KEY

PROVIDER = "cnam"
YY = "24"
TWIN_PSA = "TWINPSA0000000001"  # 17 characters, shared by twins of ranks 1 and 2
UNKNOWN_BIRTH_PSA = "UNKNOWNBIRTH00001"
OLD_PSA = "OLDPERSON00000001"
RANK_ZERO_PSA = "RANKZERO000000001"  # IR_BER_V: 0 "sans objet"
OWN_NIR = "OWNNIRANO00000001"
FUTURE = date.today() + timedelta(days=40)
QUALITY_DOCS = Path(__file__).resolve().parents[1] / "docs" / "quality.md"


def table(dataset: str, rows: list[dict[str, str]]) -> list[list[str]]:
    """CSV rows in the registry's column order; a column a row does not name is an empty cell."""
    columns = columns_of(dataset)
    unknown = {c for row in rows for c in row} - set(columns)
    assert not unknown, f"{dataset} has no column {unknown}"
    return [[row.get(c, "") for c in columns] for row in rows]


def beneficiary(psa: str, rank: str, **values: str) -> dict[str, str]:
    return {
        "BEN_NIR_PSA": psa,
        "BEN_RNG_GEM": rank,
        "BEN_IDT_ANO": psa + rank,  # BEN_NIR_PSA || BEN_RNG_GEM without a NIR of one's own: 18 characters
        "BEN_IDT_TOP": "0",
        "BEN_CDI_NIR": "00",
        "BEN_SEX_COD": "1",
        "BEN_NAI_ANN": "2019",
        "BEN_NAI_MOI": "03",
        "BEN_RES_DPT": "02A",
        "BEN_RES_COM": "004",
        "BEN_DCD_DTE": "1600-01-01",
        "ORG_AFF_BEN": "01C731220",
        "BEN_DTE_INS": "2015-06-01",
        "BEN_DTE_MAJ": "2024-05-02",
        "MAX_TRT_DTD": "2024-06-30",
        **values,
    }


def claim(order: str, psa: str, rank: str, **values: str) -> dict[str, str]:
    return {
        "DCT_ORD_NUM": order,
        "FLX_DIS_DTD": "2024-02-01",
        "FLX_EMT_NUM": "1",
        "FLX_EMT_ORD": "7",
        "FLX_EMT_TYP": "1",
        "FLX_TRT_DTD": "2024-01-20",
        "ORG_CLE_NUM": "01C731220",
        "PRS_ORD_NUM": "1",
        "REM_TYP_AFF": "1",
        "BEN_NIR_PSA": psa,
        "BEN_RNG_GEM": rank,
        "BEN_SEX_COD": "1",
        "BEN_NAI_ANN": "2019",
        "BEN_RES_DPT": "02B",
        "BEN_RES_COM": "033",
        "EXE_SOI_DTD": "2024-01-15",
        "EXE_SOI_DTF": "2024-01-15",
        "PRS_NAT_REF": "3317",
        "PRS_ACT_QTE": "2",
        "PRS_PAI_MNT": "25.40",
        "BSE_REM_BSE": "25.40",
        "BSE_REM_MNT": "16.51",
        "DPN_QLF": "0",
        "CPL_MAJ_TOP": "0",
        "PSE_SPE_COD": "50",
        **values,
    }


def pharmacy(of_claim: dict[str, str], line: str, **values: str) -> dict[str, str]:
    keys = {k: of_claim[k] for k in columns_of("ER_PHA_F")[:9]}
    return {
        **keys,
        "PHA_PRS_C13": "3400930000001",
        "PHA_ACT_QSN": "2",
        "PHA_ACT_PRU": "12.70",
        "PHA_ORD_NUM": line,
        "PHA_SEQ_RNV": "0",
        "PHA_SUB_MTF": "0",
        **values,
    }


def stay(eta: str, rsa: str, **values: str) -> dict[str, str]:
    return {
        "ETA_NUM": eta,
        "RSA_NUM": rsa,
        "COD_SEX": "1",
        "AGE_ANN": "45",
        "BDI_DEP": "2A",
        "BDI_COD": "20000",
        "DGN_PAL": "I214",
        "GRG_GHM": "05K051",
        "GHS_NUM": "1574",
        "ENT_MOD": "8",
        "SOR_MOD": "8",
        "SEJ_NBJ": "3",
        "NBR_DGN": "1",
        "NBR_ACT": "2",
        "NBR_SEA": "0",
        "SOR_ANN": "2024",
        "SOR_MOI": "03",
        **values,
    }


def stay_link(eta: str, rsa: str, nir: str, **values: str) -> dict[str, str]:
    codes = ("NIR_RET", "NAI_RET", "SEX_RET", "SEJ_RET", "FHO_RET", "PMS_RET", "DAT_RET")
    return {
        "ETA_NUM": eta,
        "RSA_NUM": rsa,
        "NIR_ANO_17": nir,
        "EXE_SOI_DTD": "01MAR2024:00:00:00",
        "EXE_SOI_DTF": "04MAR2024:00:00:00",
        "ENT_DAT": "01032024",
        "SOR_DAT": "04032024",
        "SOR_ANN": "2024",
        "SOR_MOI": "03",
        **dict.fromkeys(codes, "0"),
        "COH_NAI_RET": "0",
        "COH_SEX_RET": "0",
        **values,
    }


ORIGINAL = claim("1", TWIN_PSA, "1")
# A regularisation line repeats the claim in another statement with a negative quantity and amounts
# (Documentation-SNDS fiches/sas_prestation_dcir.md).
REGULARISATION = claim(
    "2", TWIN_PSA, "1", PRS_ACT_QTE="-2", PRS_PAI_MNT="-25.40", BSE_REM_BSE="-25.40", BSE_REM_MNT="-16.51"
)
# Key values beyond schema-snds's generator bounds (PRS_ORD_NUM <= 100, REM_TYP_AFF <= 10 in ER_PHA_F).
BIG_KEYS = claim("4", TWIN_PSA, "2", PRS_ORD_NUM="150", REM_TYP_AFF="12", PRS_ACT_QTE="1.50")

EDGE_TABLES = {
    "IR_BEN_R": [
        beneficiary(TWIN_PSA, "1"),
        beneficiary(TWIN_PSA, "2"),
        beneficiary(
            UNKNOWN_BIRTH_PSA,
            "1",
            BEN_NIR_ANO=OWN_NIR,
            BEN_IDT_ANO=OWN_NIR,
            BEN_IDT_TOP="1",
            BEN_SEX_COD="0",
            BEN_NAI_ANN="1600",
            BEN_NAI_MOI="01",
            BEN_RES_DPT="",
            BEN_RES_COM="",
            MAX_TRT_DTD="1600-01-01",
            BEN_DTE_INS="0001-01-01",
        ),
        beneficiary(OLD_PSA, "1", BEN_NAI_ANN="1895", BEN_SEX_COD="9", BEN_DCD_DTE="2023-11-30"),
        beneficiary(RANK_ZERO_PSA, "0"),
    ],
    "ER_PRS_F": [
        ORIGINAL,
        REGULARISATION,
        claim(
            "3",
            TWIN_PSA,
            "2",
            PRS_ACT_QTE="0",
            PRS_PAI_MNT="0",
            BSE_REM_BSE="0",
            BSE_REM_MNT="0",
            DPN_QLF="71",
        ),
        BIG_KEYS,
        claim(
            "5",
            UNKNOWN_BIRTH_PSA,
            "1",
            BEN_SEX_COD="0",
            BEN_NAI_ANN="1600",
            BEN_RES_COM="",
            EXE_SOI_DTF="1600-01-01",
            CPL_MAJ_TOP="",
            PSE_SPE_COD="",
        ),
        claim("6", RANK_ZERO_PSA, "0", EXE_SOI_DTF="9999-12-31"),
        claim("7", OLD_PSA, "1", EXE_SOI_DTD=f"{FUTURE:%Y-%m-%d}", EXE_SOI_DTF=""),
    ],
    "ER_PHA_F": [
        pharmacy(ORIGINAL, "1"),
        pharmacy(REGULARISATION, "1", PHA_ACT_QSN="-2"),
        pharmacy(BIG_KEYS, "25", PHA_ACT_QSN="48", PHA_ACT_PRU="30000.5"),
    ],
    f"T_MCO{YY}B": [
        stay(
            "2A0000014", "0000000042", AGE_ANN="", AGE_JOU="12", GHS_NUM="0022", SOR_MOI="3", DGN_PAL="P599"
        ),
        stay(
            "2B0000022", "0000000001", AGE_ANN="101", SEJ_NBJ="0", GRG_GHM="90Z00Z", GHS_NUM="", SOR_MOI="12"
        ),
        stay(
            "750712184", "9999999999", SEJ_NBJ="", NBR_SEA="12", NBR_ACT="3000", DGN_PAL="Z511", SOR_MOI="01"
        ),
        stay("970100228", "0000000043", COD_SEX="9", AGE_ANN="", AGE_JOU="0", SEJ_NBJ="3500", NBR_DGN="0"),
    ],
    f"T_MCO{YY}C": [
        stay_link("2A0000014", "0000000042", TWIN_PSA),
        stay_link(
            "2B0000022",
            "0000000001",
            "xxxxxxxxxxxxxxxxx",  # the PMSI's documented unusable pseudonym (Documentation-SNDS)
            NIR_RET="1",
            NAI_RET="9",
            SEJ_RET="9",
            DAT_RET="1",
            EXE_SOI_DTD="15Dec2024:08:30:00",
            EXE_SOI_DTF="15Dec2024:18:00:00",
            ENT_DAT="15122024",
            SOR_DAT="15122024",
            SOR_MOI="12",
        ),
        stay_link(
            "750712184",
            "9999999999",
            "",
            NIR_RET="1",
            EXE_SOI_DTD="01JAN1600:00:00:00",
            EXE_SOI_DTF="",
            ENT_DAT="",
            SOR_DAT="",
            SOR_MOI="1",
        ),
        stay_link("970100228", "0000000043", UNKNOWN_BIRTH_PSA),
    ],
    f"T_MCO{YY}D": [
        {
            "ETA_NUM": "2A0000014",
            "RSA_NUM": "0000000042",
            "RSS_NUM": "224",
            "ASS_DGN": "E119",
            "DGN_ASS_NUM": "1",
        },
        # The same associated diagnosis twice for one stay is documented (schema-snds's observation).
        {
            "ETA_NUM": "2A0000014",
            "RSA_NUM": "0000000042",
            "RSS_NUM": "224",
            "ASS_DGN": "E119",
            "DGN_ASS_NUM": "2",
        },
        {
            "ETA_NUM": "2B0000022",
            "RSA_NUM": "0000000001",
            "RSS_NUM": "224",
            "ASS_DGN": "I10",
            "DGN_ASS_NUM": "1",
        },
    ],
}

# Valid SNDS values that are implausible enough to be reported, never held.
EDGE_WARNINGS = {
    "IR_BEN_R": {"BEN_NAI_ANN:plausible_year", "BEN_SEX_COD:known"},
    "ER_PRS_F": {"BEN_SEX_COD:known", "EXE_SOI_DTD:not_future"},
    "T_MCOaaB": {"COD_SEX:known"},
}

# One near miss per row, each next to valid rows: name of the blocking expectation -> the row.
NEAR_MISS_TABLES = {
    "IR_BEN_R": [
        beneficiary(TWIN_PSA, "1"),
        beneficiary(TWIN_PSA[:-1], "1"),  # a pseudonym of 16 characters
        beneficiary(OLD_PSA, "1", BEN_SEX_COD="3"),  # not a code of IR_SEX_V
        beneficiary(UNKNOWN_BIRTH_PSA, "1", BEN_NAI_MOI="13"),
        beneficiary(RANK_ZERO_PSA, "0", BEN_DCD_DTE="2024-02-30"),
    ],
    "ER_PRS_F": [
        ORIGINAL,
        claim("2", TWIN_PSA, "1", FLX_DIS_DTD="01/02/2024"),  # not the ISO 8601 the registry declares
        claim("3", TWIN_PSA, "1", PRS_ACT_QTE="1,5"),  # a decimal comma
        claim("4", TWIN_PSA, "1", FLX_TRT_DTD=f"{FUTURE:%Y-%m-%d}"),  # a processing date in the future
    ],
    f"T_MCO{YY}B": [
        stay("2A0000014", "0000000042"),
        stay("750712184", "42"),  # an index that lost its zero padding
        stay("2C0000001", "0000000044"),  # no département 2C
        stay("750712184", "0000000045", SOR_MOI="13"),
    ],
    f"T_MCO{YY}C": [
        stay_link("2A0000014", "0000000042", TWIN_PSA),
        stay_link("750712184", "0000000045", TWIN_PSA, EXE_SOI_DTD="2024-03-01 00:00:00"),  # ISO, not SAS
    ],
}
NEAR_MISS_ERRORS = {
    "IR_BEN_R": {"BEN_NIR_PSA:length", "BEN_SEX_COD:in_set", "BEN_NAI_MOI:type", "BEN_DCD_DTE:type"},
    "ER_PRS_F": {"FLX_DIS_DTD:type", "PRS_ACT_QTE:type", "FLX_TRT_DTD:not_future"},
    "T_MCOaaB": {"RSA_NUM:pattern", "ETA_NUM:pattern", "SOR_MOI:type"},
    "T_MCOaaC": {"EXE_SOI_DTD:type"},
}
NEAR_MISS_WARNINGS = {
    "IR_BEN_R": {"BEN_SEX_COD:known"},  # the code 3 is not 1 or 2 either
    "ER_PRS_F": set(),
    "T_MCOaaB": set(),
    "T_MCOaaC": set(),
}


def hdh_deliver(tmp_path: Path, keys, sftp_server, inbox: str, delivery_id: str, tables: dict) -> None:
    """Write the tables as CSV and send them with the provider's command, ``hdh-deliver``."""
    files = []
    for dataset, rows in tables.items():
        path = write_csv(tmp_path / f"{delivery_id}-{dataset}.csv", dataset, table(dataset, rows))
        files += ["--file", f"{dataset}={path}"]
    command = [
        str(Path(sys.executable).with_name("hdh-deliver")),
        "--provider",
        PROVIDER,
        "--delivery-id",
        delivery_id,
        *files,
        "--hub-public-key",
        str(keys.hub.public_key_file),
        "--signing-key",
        str(keys.cnam.private_key_file),
        "--sftp-host",
        sftp_server.host,
        "--sftp-port",
        str(sftp_server.port),
        "--sftp-user",
        sftp_server.user,
        "--sftp-key",
        str(sftp_server.client_key),
        "--known-hosts",
        str(sftp_server.known_hosts),
        "--inbox",
        inbox,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert completed.returncode == 0, completed.stderr
    assert "uploaded to" in completed.stdout


def outcomes_by_severity(storage, delivery_id: str, dataset: str) -> dict[str, set[str]]:
    report = storage.quality_summary(PROVIDER, delivery_id)[dataset]
    failed = [o for o in report["outcomes"] if o["success"] is False]
    assert all(o["evaluated"] for o in report["outcomes"] if o["name"].endswith(":orphans")), dataset
    return {
        severity: {o["name"] for o in failed if o["severity"] == severity}
        for severity in ("error", "warning")
    }


def test_snds_edge_values_are_published(tmp_path, keys, gated, sftp_server, sftp_settings, inbox) -> None:
    hdh_deliver(tmp_path, keys, sftp_server, inbox, "edge", EDGE_TABLES)
    report = ingest(sftp_settings, inbox, gated, PROVIDER, "edge")
    assert not report.held, {d: ok for d, ok in report.quality_passed.items() if not ok}
    assert set(report.quality_passed) == {
        "IR_BEN_R",
        "ER_PRS_F",
        "ER_PHA_F",
        "T_MCOaaB",
        "T_MCOaaC",
        "T_MCOaaD",
    }
    storage = gated.storage
    for dataset in report.quality_passed:
        found = outcomes_by_severity(storage, "edge", dataset)
        assert found == {"error": set(), "warning": EDGE_WARNINGS.get(dataset, set())}, dataset

    # Published verbatim: the padding, the Corsican FINESS and the signs are the provider's.
    stays = raw_rows(storage, "T_MCOaaB")
    assert {(row[0], row[1]) for row in stays} == {
        ("2A0000014", "0000000042"),
        ("2B0000022", "0000000001"),
        ("750712184", "9999999999"),
        ("970100228", "0000000043"),
    }
    quantity = columns_of("ER_PRS_F").index("PRS_ACT_QTE")
    assert sorted(row[quantity] for row in raw_rows(storage, "ER_PRS_F")) == sorted(
        ["2", "-2", "0", "1.50", "2", "2", "2"]
    )


def test_near_misses_are_held_each_for_its_reason(
    tmp_path, keys, gated, sftp_server, sftp_settings, inbox
) -> None:
    hdh_deliver(tmp_path, keys, sftp_server, inbox, "near-miss", NEAR_MISS_TABLES)
    report = ingest(sftp_settings, inbox, gated, PROVIDER, "near-miss")
    assert report.held
    storage = gated.storage
    assert not storage.raw_dir(PROVIDER, "near-miss").exists()
    summary = storage.quality_summary(PROVIDER, "near-miss")
    for dataset, errors in NEAR_MISS_ERRORS.items():
        assert outcomes_by_severity(storage, "near-miss", dataset) == {
            "error": errors,
            "warning": NEAR_MISS_WARNINGS[dataset],
        }, dataset
        for outcome in summary[dataset]["outcomes"]:
            if outcome["name"] in errors:
                # Exactly the planted row, with a sentence saying what is wrong.
                assert outcome["unexpected_count"] == 1, outcome["name"]
                assert outcome["description"].startswith("Failed (error)"), outcome["name"]
    assert not report.quality_passed["IR_BEN_R"]
    # The pseudonyms in the reports are masked, never whole.
    assert TWIN_PSA[:-1] not in str(summary)


def test_the_docs_list_every_hand_written_rule_with_its_severity() -> None:
    """docs/quality.md says which rules hold a delivery; it must say what the suites do."""
    text = QUALITY_DOCS.read_text(encoding="utf-8")
    listed = text.split("<!-- blocking-rules")[1].split("<!-- /blocking-rules -->")[0]
    documented = {}
    for line in listed.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            documented[cells[0].strip("`")] = {
                severity: set(re.findall(r"`([^`]+)`", cell))
                for severity, cell in zip(SEVERITIES, cells[1:], strict=True)
            }
    registry = default_registry()
    actual = {
        name: {
            severity: {
                e.meta["name"]
                for e in handwritten_expectations(registry.resolve(name))
                if e.meta["severity"] == severity
            }
            for severity in SEVERITIES
        }
        for name in registry.names()
    }
    # A dataset generated from the references has only the generated rules (the table above the
    # per-dataset one) until someone writes rules for it: then it is listed like a curated one.
    listed = {
        name
        for name, rules in actual.items()
        if GENERATED_KEY not in registry.resolve(name).raw or any(rules.values())
    }
    assert documented == {name: actual[name] for name in listed}


@pytest.mark.parametrize(
    ("dataset", "column", "text", "typed"),
    [
        ("IR_BEN_R", "BEN_DCD_DTE", "1600-01-01", None),
        ("IR_BEN_R", "BEN_DCD_DTE", "0001-01-01", None),
        ("IR_BEN_R", "BEN_DCD_DTE", "9999-12-31", None),
        ("IR_BEN_R", "BEN_DCD_DTE", "2023-11-30", date(2023, 11, 30)),
        ("IR_BEN_R", "BEN_NAI_ANN", "1600", None),
        ("IR_BEN_R", "BEN_NAI_ANN", "1895", 1895),
        ("T_MCOaaC", "EXE_SOI_DTD", "01JAN1600:10:30:00", None),
        ("T_MCOaaC", "EXE_SOI_DTD", "31dec9999:00:00:00", None),
        ("T_MCOaaC", "SOR_DAT", "31129999", None),
    ],
)
def test_sentinels_are_no_values_for_plausibility(dataset: str, column: str, text: str, typed) -> None:
    """The typed value plausibility rules read: a sentinel (any time of its day) is no date, 1600 no year."""
    schema = default_registry().resolve(dataset)
    value = column_sql(schema, column + VALUE_SUFFIX)
    invalid = column_sql(schema, column + INVALID_SUFFIX)
    row = duckdb.execute(
        f"SELECT {value}, {invalid} FROM (SELECT ? AS {quote_identifier(column)})", [text]
    ).fetchone()
    assert row == (typed, None)
