"""Raw tables for the dbt tests, written as ingestion writes them, and running dbt on them.

Layout ``<raw root>/<provider>/<delivery_id>/<DATASET>/<file>.parquet``; every
registry column is VARCHAR holding the delivered text (None for an empty
value), plus the lineage columns ``hdh_provider``, ``hdh_delivery_id``,
``hdh_dataset`` (the name as delivered) and ``hdh_loaded_at``. The row
builders below give one delivered row of a dataset with plausible defaults;
pseudonyms are made from short tags (``psa``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from hdh_pipelines.normalisation.assets import partition_environment
from hdh_pipelines.open_science.synthetic import SYNTHETIC_DRUGS, generate_snds
from hdh_pipelines.registry import default_registry

REPO = Path(__file__).resolve().parents[1]
PROJECT = REPO / "dbt_project"
DBT = Path(sys.executable).with_name("dbt")


def write_raw(
    raw_root: Path,
    dataset: str,
    rows: Sequence[Mapping[str, str | None]],
    *,
    provider: str | None = None,
    delivery_id: str = "d1",
    loaded_at: datetime = datetime(2026, 1, 5, 10, 0),
    file_name: str = "part-0",
) -> Path:
    """Write one raw Parquet file of ``dataset`` (a delivered name such as T_MCO25B is resolved).

    ``provider`` defaults to the first the registry allows for the dataset (staging reads no other).
    """
    schema = default_registry().resolve(dataset)
    if schema is None:
        raise ValueError(f"Unknown dataset {dataset}.")
    provider = provider or schema.providers[0]
    unknown = {name for row in rows for name in row} - set(schema.column_names)
    if unknown:
        raise ValueError(f"{schema.name} has no column {sorted(unknown)}.")
    columns = {name: pa.array([row.get(name) for row in rows], pa.string()) for name in schema.column_names}
    columns |= {
        "hdh_provider": pa.array([provider] * len(rows), pa.string()),
        "hdh_delivery_id": pa.array([delivery_id] * len(rows), pa.string()),
        "hdh_dataset": pa.array([dataset] * len(rows), pa.string()),
        "hdh_loaded_at": pa.array([loaded_at] * len(rows), pa.timestamp("us")),
    }
    folder = raw_root / provider / delivery_id / schema.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{file_name}.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def write_synthetic_raw(
    raw_root: Path,
    *,
    persons: int,
    year: int = 2025,
    delivery_id: str = "synthetic-1",
    loaded_at: datetime = datetime(2026, 1, 5, 10, 0),
) -> dict[str, Path]:
    """The synthetic SNDS population (``generate_snds``) as one raw delivery of every dataset."""
    written = {}
    with tempfile.TemporaryDirectory() as scratch, duckdb.connect() as connection:
        for delivered, csv_path in generate_snds(Path(scratch), persons=persons, year=year).items():
            schema = default_registry().resolve(delivered)
            provider = schema.providers[0]  # each dataset from a provider allowed to deliver it
            folder = raw_root / provider / delivery_id / schema.name
            folder.mkdir(parents=True, exist_ok=True)
            written[delivered] = folder / "part-0.parquet"
            connection.execute(
                f"""
                COPY (
                    SELECT *, ? AS hdh_provider, ? AS hdh_delivery_id, ? AS hdh_dataset,
                           ?::TIMESTAMP AS hdh_loaded_at
                    FROM read_csv(?, delim = ';', header = true, all_varchar = true)
                ) TO '{written[delivered]}' (FORMAT parquet)
                """,
                [provider, delivery_id, delivered, loaded_at, str(csv_path)],
            )
    return written


def psa(tag: str) -> str:
    """A 17-character pseudonym."""
    return tag.ljust(17, "0")


def ben(
    tag,
    rank,
    *,
    nir=None,
    top="0",
    sex="1",
    year="1970",
    month="03",
    death="1600-01-01",
    updated="2025-06-01",
):
    return {
        "BEN_NIR_PSA": psa(tag),
        "BEN_RNG_GEM": rank,
        "BEN_NIR_ANO": nir,
        "BEN_IDT_TOP": top,
        "BEN_SEX_COD": sex,
        "BEN_NAI_ANN": year,
        "BEN_NAI_MOI": month,
        "BEN_RES_DPT": "075",
        "BEN_RES_COM": "056",
        "BEN_DCD_DTE": death,
        "BEN_DTE_INS": "2010-01-01",
        "BEN_DTE_MAJ": updated,
    }


def claim(number, flow, tag, rank, care, *, paid="30.00", nature="1111", end=None, qualifier="0"):
    """One ER_PRS_F row; the 9 key columns vary only by DCT_ORD_NUM and FLX_DIS_DTD."""
    return {
        **claim_key(number, flow),
        "BEN_NIR_PSA": psa(tag),
        "BEN_RNG_GEM": rank,
        "EXE_SOI_DTD": care,
        "EXE_SOI_DTF": end or care,
        "PRS_NAT_REF": nature,
        "BSE_PRS_NAT": nature,
        "PRS_ACT_QTE": "1",
        "PRS_PAI_MNT": paid,
        "BSE_REM_BSE": paid,
        "BSE_REM_MNT": paid,
        "DPN_QLF": qualifier,
        "CPL_MAJ_TOP": "0",
        "PSE_SPE_COD": "1",
    }


def claim_key(number, flow):
    return {
        "DCT_ORD_NUM": str(number),
        "FLX_DIS_DTD": flow,
        "FLX_EMT_NUM": "1",
        "FLX_EMT_ORD": "1",
        "FLX_EMT_TYP": "1",
        "FLX_TRT_DTD": flow,
        "ORG_CLE_NUM": "01C075000",
        "PRS_ORD_NUM": "1",
        "REM_TYP_AFF": "1",
    }


def pharmacy(number, flow, line, drug, boxes="1"):
    return {
        **claim_key(number, flow),
        "PHA_PRS_C13": drug.cip13,
        "PHA_ACT_QSN": boxes,
        "PHA_ACT_PRU": str(drug.unit_price),
        "PHA_ORD_NUM": str(line),
        "PHA_SEQ_RNV": "0",
        "PHA_SUB_MTF": "0",
    }


def ccam_line(number, flow, code, line="1", **columns):
    """One ER_CAM_F row: a CCAM act of claim ``number`` (its quantity is the claim's PRS_ACT_QTE)."""
    return {
        **claim_key(number, flow),
        "CAM_ORD_NUM": line,
        "CAM_PRS_IDE": code,
        "CAM_ACT_COD": "1",
        "CAM_TRT_PHA": "0",
        "CAM_ACT_PRU": "14.46",
        "CAM_REM_BSE": "14.46",
        **columns,
    }


def establishment(number, flow, t2a):
    """One ER_ETE_F row: claim ``number`` executed in an establishment, with its T2A indicator ETE_IND_TAA."""
    return {**claim_key(number, flow), "ETE_IND_TAA": t2a}


def presentation(cip13, atc, label, *, large_pack=False, units="30 CPR"):
    """One IR_PHA_R row: a CIP13 presentation with its ATC class, pack type and units per box."""
    return {
        "PHA_CIP_C13": cip13,
        "PHA_MED_NOM": label,
        "PHA_ATC_C07": atc,
        "PHA_ATC_C03": atc[:3] if atc else None,
        "PHA_CND_TOP": "GC" if large_pack else "PC",
        "PHA_UPC_NBR": units,
    }


def diagnosis_code(code, label):
    """One IR_CIM_V row: an ICD-10 code as the PMSI writes it (no dot) and its label."""
    return {"CIM_COD": code, "CIM_LIB": label, "CAT_CIM_COD": code[:3], "VER_CPT_COD": "V8.0", "TEC_COL": "0"}


def stay_b(rsa, dp, *, dr=None, ghm="05M042", days="5"):
    return {
        "ETA_NUM": "750001011",
        "RSA_NUM": str(rsa),
        "COD_SEX": "1",
        "AGE_ANN": "54",
        "BDI_DEP": "75",
        "BDI_COD": "75015",
        "DGN_PAL": dp,
        "DGN_REL": dr,
        "GRG_GHM": ghm,
        "GHS_NUM": "4206",
        "ENT_MOD": "8",
        "SOR_MOD": "8",
        "SEJ_NBJ": days,
        "NBR_DGN": "0",
        "NBR_ACT": "0",
        "SOR_ANN": "2025",
        "SOR_MOI": "01",
    }


def stay_c(rsa, tag, start, end):
    """T_MCOaaC in the SNDS export formats: %d%b%Y:%H:%M:%S (month in capitals, as SAS writes it), %d%m%Y."""
    return {
        "ETA_NUM": "750001011",
        "RSA_NUM": str(rsa),
        "NIR_ANO_17": psa(tag),
        "EXE_SOI_DTD": start.strftime("%d%b%Y:%H:%M:%S").upper(),
        "EXE_SOI_DTF": end.strftime("%d%b%Y:%H:%M:%S").upper() if end else "01JAN1600:00:00:00",
        "ENT_DAT": start.strftime("%d%m%Y"),
        "SOR_DAT": end.strftime("%d%m%Y") if end else None,
        "SOR_ANN": "2025",
        "SOR_MOI": start.strftime("%m"),
        "NIR_RET": "0",
        "NAI_RET": "0",
        "SEX_RET": "0",
        "SEJ_RET": "0",
        "FHO_RET": "0",
        "PMS_RET": "0",
        "DAT_RET": "0",
        "COH_NAI_RET": "0",
        "COH_SEX_RET": "0",
    }


def stay_d(rsa, number, code):
    return {
        "ETA_NUM": "750001011",
        "RSA_NUM": str(rsa),
        "RSS_NUM": "224",
        "ASS_DGN": code,
        "DGN_ASS_NUM": str(number),
    }


def stay_um(rsa, number, dp, dr=None):
    """One T_MCOaaUM row: the medical unit (RUM) ``number`` of the stay with its own DP and DR."""
    return {
        "ETA_NUM": "750001011",
        "RSA_NUM": str(rsa),
        "RSS_NUM": "224",
        "UM_ORD_NUM": str(number),
        "DGN_PAL": dp,
        "DGN_REL": dr,
    }


def stay_a(rsa, code, delay, *, times="1", modifier=None):
    """One T_MCOaaA row: a CCAM act of the stay, ``delay`` days after its entry (ENT_DAT_DEL)."""
    return {
        "ETA_NUM": "750001011",
        "RSA_NUM": str(rsa),
        "RSS_NUM": "224",
        "CDC_ACT": code,
        "ACV_ACT": "1",
        "PHA_ACT": "0",
        "ENT_DAT_DEL": delay,
        "NBR_EXE_ACT": times,
        "MOD_ACT": modifier,
    }


def opt_out(tag, rank, since, status="ACTIVE", scope="ALL", until=None):
    return {
        "BEN_NIR_PSA": psa(tag),
        "BEN_RNG_GEM": rank,
        "OPT_OUT_DTE": since,
        "OPT_END_DTE": until,
        "OPT_SCOPE": scope,
        "OPT_STATUS": status,
    }


def at(day: str, hour: int = 0) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour)


# A Dagster run of the asset keys given as arguments, in a process of its own (as a launched run would
# be), on the instance of $DAGSTER_HOME: python -c RUN_ASSETS key...
RUN_ASSETS = """
import sys
import dagster as dg
from hdh_pipelines.definitions import defs
job = defs.resolve_implicit_global_asset_job_def().get_subset(
    asset_selection={dg.AssetKey.from_user_string(k) for k in sys.argv[1:]}
)
result = job.execute_in_process(instance=dg.DagsterInstance.get(), raise_on_error=False)
sys.exit(0 if result.success else 1)
"""


def run_dbt(*args: str, warehouse: Path, raw_root: Path, target: Path, partition=None, env=None, prefix=()):
    """Run dbt against one warehouse and raw root; fail with dbt's own output."""
    command = [
        *prefix,
        str(DBT),
        *args,
        "--project-dir",
        str(PROJECT),
        "--profiles-dir",
        str(PROJECT),
        "--target-path",
        str(target),
        "--log-path",
        str(target / "logs"),
    ]
    environment = {
        **os.environ,
        "HDH_WAREHOUSE_PATH": str(warehouse),
        "HDH_RAW_ROOT": str(raw_root),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        # The month range (start, end), or none: a whole build, the variables unset.
        **partition_environment(*(partition or (None, None))),
        **(env or {}),
    }
    environment = {name: value for name, value in environment.items() if value is not None}
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, _dbt_failure(result)
    return result


def _dbt_failure(result: subprocess.CompletedProcess) -> str:
    """dbt's summary, and the first error lines of its stderr: on Spark, the JVM's log, whose first error
    (a signal, an OutOfMemoryError) is the cause of the rest and would fall outside a plain tail."""
    cause = re.compile(r"ERROR|SIGNAL|Error:|Exception:")
    errors = [line for line in result.stderr.splitlines() if cause.search(line)]
    stdout, stderr = result.stdout[-6000:], result.stderr[-3000:]
    return "\n".join(
        [stdout, "--- first errors on stderr ---", *errors[:15], "--- stderr's tail ---", stderr]
    )


def query(warehouse: Path, sql: str, parameters=None) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        return connection.execute(sql, parameters or []).fetchall()


# The golden delivery of tests/test_dbt_models.py, built again on Spark by tests/test_dbt_engines.py.
FIRST = datetime(2026, 1, 5, 10, 0)
SECOND = datetime(2026, 2, 5, 10, 0)
PARACETAMOL = SYNTHETIC_DRUGS[0]
METFORMIN = SYNTHETIC_DRUGS[3]

# The partitioned models (tag hdh_partitioned) and their partition date column.
PARTITIONED = {
    "staging.stg_er_prs_f": "flx_dis_dtd",
    "staging.stg_er_pha_f": "flx_dis_dtd",
    "intermediate.int_claims": "flx_dis_dtd",
    "intermediate.int_claim_pharmacy_lines": "flx_dis_dtd",
    "staging.stg_er_cam_f": "flx_dis_dtd",
    "staging.stg_er_ete_f": "flx_dis_dtd",
    "intermediate.int_claim_ccam_lines": "flx_dis_dtd",
    "intermediate.int_hospital_stays": "stay_start_date",
    "intermediate.int_hospital_stay_diagnoses": "stay_start_date",
    "marts.claims": "flx_dis_dtd",
    "marts.drug_dispensations": "flx_dis_dtd",
    "marts.hospital_stays": "stay_start_date",
    "marts.hospital_stay_diagnoses": "stay_start_date",
}


NIR_P1, NIR_P5 = "NIRANO" + "1" * 11, "NIRANO" + "5" * 11


def write_golden_inputs(raw: Path) -> None:
    first = {"delivery_id": "d1", "loaded_at": FIRST}
    second = {"delivery_id": "d2", "loaded_at": SECOND}
    write_raw(
        raw,
        "IR_BEN_R",
        [
            ben("A", "1", nir=NIR_P1, top="1", sex="2", year="1971"),  # corrected by the second delivery
            ben("B", "1", nir=NIR_P1, top="1", updated="2025-01-01"),
            ben("T", "1", sex="2", year="2010", month="07"),
            ben("T", "2", sex="2", year="2010", month="07"),
            ben("U", "1", year="2012"),
            ben("U", "2", year="2012"),
            ben("C", "1", year="1980"),
            ben("D", "1", nir=NIR_P5, top="1", year="1960"),
            ben("E", "1", nir=NIR_P5, top="1", year="1960"),
            ben("F", "1", top="1", sex="2", year="1990", death="2025-11-30"),
            ben("G", "1", year="1955"),
        ],
        **first,
    )
    write_raw(raw, "IR_BEN_R", [ben("A", "1", nir=NIR_P1, top="1", sex=" 1 ", year="1970")], **second)
    write_raw(
        raw,
        "ER_PRS_F",
        [
            claim(1, "2025-02-01", "A", "1", "2025-01-15", paid="25.00"),  # corrected by the second delivery
            claim(2, "2025-03-01", "B", "1", "2025-02-10", nature="3313", end="1600-01-01"),
            claim(3, "2025-03-01", "T", "2", "2025-02-12", nature="3311", end="1600-01-01"),
            claim(4, "2025-02-01", "C", "1", "2025-01-20", nature="3313", end="1600-01-01"),
            claim(5, "2025-04-01", "D", "1", "2025-03-03"),
            claim(6, "2025-04-01", "Z", "1", "2025-03-04"),
            claim(7, "2025-04-01", "A", "1", "2025-03-05", qualifier="71"),
            claim(8, "2025-03-01", "U", "1", "2025-02-20"),
            claim(9, "2025-03-01", "U", "2", "2025-02-21"),
            claim(10, "2025-02-01", "A", "1", "2025-01-25", paid="10.00"),
        ],
        **first,
    )
    write_raw(raw, "ER_PRS_F", [claim(1, "2025-02-01", "A", "1", "2025-01-15", paid="30.00")], **second)
    # Claim 10 again in two deliveries loaded at the same time: the greater delivery id wins.
    write_raw(
        raw,
        "ER_PRS_F",
        [claim(10, "2025-02-01", "A", "1", "2025-01-25", paid="11.00")],
        delivery_id="d3a",
        loaded_at=SECOND,
    )
    write_raw(
        raw,
        "ER_PRS_F",
        [claim(10, "2025-02-01", "A", "1", "2025-01-25", paid="12.00")],
        delivery_id="d3b",
        loaded_at=SECOND,
    )
    write_raw(
        raw,
        "ER_PHA_F",
        [
            pharmacy(2, "2025-03-01", 1, PARACETAMOL, boxes="3"),
            pharmacy(2, "2025-03-01", 2, METFORMIN),  # dropped by the second delivery of claim 2's lines
            pharmacy(3, "2025-03-01", 1, METFORMIN),
            pharmacy(4, "2025-02-01", 1, PARACETAMOL),
            pharmacy(99, "2025-03-01", 1, PARACETAMOL),  # its claim was never delivered
        ],
        **first,
    )
    write_raw(raw, "ER_PHA_F", [pharmacy(2, "2025-03-01", 1, PARACETAMOL, boxes="2")], **second)
    # CCAM acts: of a countable claim, of a line for information only, and of a claim never delivered.
    write_raw(
        raw,
        "ER_CAM_F",
        [
            ccam_line(8, "2025-03-01", "DEQP003"),
            ccam_line(7, "2025-04-01", "DEQP003"),
            ccam_line(99, "2025-03-01", "DEQP003"),
        ],
        **first,
    )
    # Establishment lines: claim 10 of a public hospital billing directly (ETE_IND_TAA 1); claim 9 so first,
    # then corrected to 0 by the second delivery; claim 1 without the indicator. Other claims have none.
    write_raw(
        raw,
        "ER_ETE_F",
        [
            establishment(10, "2025-02-01", "1"),
            establishment(9, "2025-03-01", "1"),
            establishment(1, "2025-02-01", None),
        ],
        **first,
    )
    write_raw(raw, "ER_ETE_F", [establishment(9, "2025-03-01", "0")], **second)
    write_raw(
        raw,
        "IR_PHA_R",
        [
            presentation(PARACETAMOL.cip13, PARACETAMOL.atc, PARACETAMOL.label, units="8 CPR"),
            presentation(METFORMIN.cip13, METFORMIN.atc, METFORMIN.label, units="30"),
        ],
        **first,
    )
    write_raw(
        raw,
        "T_MCO25B",
        [
            stay_b(1000000001, "I219"),  # principal diagnosis corrected by the second delivery
            stay_b(1000000002, "J189"),
            stay_b(1000000003, "S720"),
            stay_b(1000000004, "Z511", dr="C341", ghm="28Z07Z", days="0"),
            stay_b(1000000005, "K358", ghm="90Z00Z"),
            stay_b(1000000006, "N390"),
        ],
        **first,
    )
    write_raw(raw, "T_MCO25B", [stay_b(1000000001, "I214")], **second)
    write_raw(
        raw,
        "T_MCO25C",
        [
            stay_c(1000000001, "A", at("2025-01-10", 8), at("2025-01-15", 14)),
            stay_c(1000000002, "T", at("2025-02-03"), at("2025-02-06")),
            stay_c(1000000003, "C", at("2025-03-01"), at("2025-03-04")),
            stay_c(1000000004, "B", at("2025-03-12", 9), None),
            stay_c(1000000005, "F", at("2025-01-20"), at("2025-01-22")),
            stay_c(1000000006, "U", at("2025-02-14"), at("2025-02-18")),
        ],
        **first,
    )
    write_raw(
        raw,
        "T_MCO25D",
        [
            stay_d(1000000001, 1, "E119"),
            stay_d(1000000001, 2, "I10"),
            stay_d(1000000001, 3, "N183"),
            stay_d(1000000003, 1, "I10"),
        ],
        **first,
    )
    write_raw(raw, "T_MCO25D", [stay_d(1000000001, 1, "E119"), stay_d(1000000001, 2, "I10")], **second)
    # Medical units: the second delivery replaces stay 1's set (K590 goes); its first unit repeats the stay's
    # DP, its third the DAS E119, and I500 is the DP of one unit and the DR of another. The error stay's unit
    # reaches nothing.
    write_raw(
        raw,
        "T_MCO25UM",
        [stay_um(1000000001, 1, "I214"), stay_um(1000000001, 2, "K590"), stay_um(1000000005, 1, "I219")],
        **first,
    )
    write_raw(
        raw,
        "T_MCO25UM",
        [
            stay_um(1000000001, 1, "I214"),
            stay_um(1000000001, 2, "I500", "E109"),
            stay_um(1000000001, 3, "E119", "I500"),
        ],
        **second,
    )
    # Stay acts: the second delivery replaces stay 1's set; the error stay's act reaches no visit.
    write_raw(
        raw,
        "T_MCO25A",
        [
            stay_a(1000000001, "DEQP003", "0"),
            stay_a(1000000001, "YYYY600", "1"),
            stay_a(1000000005, "HHFA016", "0"),
        ],
        **first,
    )
    write_raw(raw, "T_MCO25A", [stay_a(1000000001, "DZQM006", "2", times="2", modifier="J")], **second)
    write_raw(
        raw,
        "OPT_OUT",
        [
            opt_out("C", "1", "2024-05-01"),
            opt_out("E", "1", "2024-06-01", scope="RESEARCH"),
            opt_out("U", "2", "2024-07-01", scope="LINKAGE"),
            opt_out("G", "1", "2023-01-01"),  # withdrawn in the second delivery
        ],
        **first,
    )
    write_raw(
        raw, "OPT_OUT", [opt_out("G", "1", "2023-01-01", status="WITHDRAWN", until="2023-06-01")], **second
    )


def in_parallel(*tracks: Callable[[], None]) -> None:
    """Run independent sequences of dbt invocations side by side: each keeps about one core busy."""
    with ThreadPoolExecutor(max_workers=len(tracks)) as pool:
        for future in [pool.submit(track) for track in tracks]:
            future.result()
