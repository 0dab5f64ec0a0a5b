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
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from hdh_pipelines.normalisation.assets import partition_environment
from hdh_pipelines.open_science.synthetic import generate_snds
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
