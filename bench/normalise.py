"""Benchmark: `dbt build` of the normalisation against the same compiled SQL run directly in DuckDB.

Not a test. Generates raw tables laid out and typed as ingestion writes them
(Parquet, every registry column VARCHAR, lineage columns) with DuckDB SQL:
``--rows`` claims (ER_PRS_F, 10 M by default) over twelve monthly flows, the
pharmacy detail (ER_PHA_F) of the half that are pharmacy claims, a second
delivery correcting 1 % of the claims, the beneficiary referential (IR_BEN_R)
of their persons and a few opt-outs. The PMSI and the cohort have no delivery.

The project is parsed once (``dbt parse``, as a deployment does), then, in the
same run, alternating ``--repeat`` times (the best of each is kept: on a shared
machine it is the least disturbed run):

- ``dbt``: ``dbt build`` (seed, every model, every data test) into a fresh
  warehouse, timed as the wall clock of the ``dbt`` process, start-up included;
- ``direct``: the SQL that this dbt build compiled (``target/compiled``), run
  in the same dependency order on one DuckDB connection into another fresh
  warehouse, in a process of its own: ``CREATE TABLE <relation> AS <model>``
  for each model, ``SELECT count(*) FROM (<test>)`` for each test, the seed
  read with ``read_csv``.

Both sides run with the same DuckDB memory limit (``HDH_DUCKDB_MEMORY_LIMIT``,
default 4GB) and must end up with the same tables and row counts. The peak
resident memory of each process is printed. Usage::

    .venv/bin/python bench/normalise.py [--rows 10000000] [--repeat 2] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from graphlib import TopologicalSorter
from pathlib import Path

import duckdb

from hdh_devtools.raw_tables import registry_columns_select

REPO = Path(__file__).resolve().parents[1]
PROJECT = REPO / "dbt_project"
DBT = Path(sys.executable).with_name("dbt")
# A large delivery arrives as several files.
ROWS_PER_FILE = 2_500_000
# Persons per claim: each person has about ten claims in the year.
CLAIMS_PER_PERSON = 10
# DuckDB's memory cap on both sides (dbt reads it through profiles.yml): memory stays bounded, DuckDB spills.
MEMORY_LIMIT = os.environ.get("HDH_DUCKDB_MEMORY_LIMIT", "4GB")
LINEAGE = (
    "'cnam' AS hdh_provider, {delivery!r} AS hdh_delivery_id, {dataset!r} AS hdh_dataset, "
    "{loaded!r}::TIMESTAMP AS hdh_loaded_at"
)

# One claim per row i of range(): a décompte (i // 3) has up to three benefits, all in the monthly flow of
# its care date; the person is drawn from the décompte. Half the claims are pharmacy (3311, 3313).
CLAIMS = """
    SELECT i, i // 3 AS dct, hash(i // 3) AS h, hash(i, 'line') AS g,
           DATE '2024-12-01' + (hash(i // 3, 'care') % 365)::INTEGER AS care,
           hash(i // 3, 'person') % {persons} AS person,
           [1111, 1112, 3311, 3313][(1 + hash(i, 'nature') % 4)::BIGINT] AS nature
    FROM range({start}, {stop}) t(i)
"""
ER_PRS_F = """
    SELECT (100000000 + dct)::VARCHAR AS DCT_ORD_NUM,
           strftime(date_trunc('month', care) + INTERVAL 1 MONTH, '%Y-%m-%d') AS FLX_DIS_DTD,
           (1 + h % 20)::VARCHAR AS FLX_EMT_NUM, (h % 10000)::VARCHAR AS FLX_EMT_ORD, '1' AS FLX_EMT_TYP,
           strftime(date_trunc('month', care) + INTERVAL 25 DAY, '%Y-%m-%d') AS FLX_TRT_DTD,
           '01C' || lpad((h % 95 + 1)::VARCHAR, 3, '0') || '000' AS ORG_CLE_NUM,
           (1 + i % 3)::VARCHAR AS PRS_ORD_NUM, '1' AS REM_TYP_AFF,
           upper(substr(md5(person::VARCHAR), 1, 17)) AS BEN_NIR_PSA, '1' AS BEN_RNG_GEM,
           (1 + person % 2)::VARCHAR AS BEN_SEX_COD, (1930 + person % 90)::VARCHAR AS BEN_NAI_ANN,
           lpad((person % 95 + 1)::VARCHAR, 3, '0') AS BEN_RES_DPT,
           lpad((person % 900 + 1)::VARCHAR, 3, '0') AS BEN_RES_COM,
           strftime(care, '%Y-%m-%d') AS EXE_SOI_DTD,
           CASE WHEN nature > 3000 THEN '1600-01-01' ELSE strftime(care, '%Y-%m-%d') END AS EXE_SOI_DTF,
           nature::VARCHAR AS PRS_NAT_REF, nature::VARCHAR AS BSE_PRS_NAT, '1' AS PRS_ACT_QTE,
           printf('%.2f', (g % 10000) / {paid_divisor}) AS PRS_PAI_MNT,
           printf('%.2f', (g % 10000) / 100) AS BSE_REM_BSE, printf('%.2f', (g % 10000) / 140) AS BSE_REM_MNT,
           CASE WHEN g % 20 = 0 THEN '71' ELSE '0' END AS DPN_QLF, '0' AS CPL_MAJ_TOP,
           CASE WHEN nature > 3000 THEN '0' ELSE (1 + g % 80)::VARCHAR END AS PSE_SPE_COD
    FROM claims
"""
ER_PHA_F = """
    SELECT (100000000 + dct)::VARCHAR AS DCT_ORD_NUM,
           strftime(date_trunc('month', care) + INTERVAL 1 MONTH, '%Y-%m-%d') AS FLX_DIS_DTD,
           (1 + h % 20)::VARCHAR AS FLX_EMT_NUM, (h % 10000)::VARCHAR AS FLX_EMT_ORD, '1' AS FLX_EMT_TYP,
           strftime(date_trunc('month', care) + INTERVAL 25 DAY, '%Y-%m-%d') AS FLX_TRT_DTD,
           '01C' || lpad((h % 95 + 1)::VARCHAR, 3, '0') || '000' AS ORG_CLE_NUM,
           (1 + i % 3)::VARCHAR AS PRS_ORD_NUM, '1' AS REM_TYP_AFF,
           ['3400999000017', '3400999000024', '3400999000048', '3400999000062', '3400999000079']
               [(1 + g % 5)::BIGINT] AS PHA_PRS_C13,
           (1 + g % 3)::VARCHAR AS PHA_ACT_QSN, printf('%.2f', 2 + (g % 800) / 100) AS PHA_ACT_PRU,
           '1' AS PHA_ORD_NUM, (g % 3)::VARCHAR AS PHA_SEQ_RNV, '0' AS PHA_SUB_MTF
    FROM claims
    WHERE nature > 3000
"""
IR_BEN_R = """
    SELECT upper(substr(md5(p::VARCHAR), 1, 17)) AS BEN_NIR_PSA, '1' AS BEN_RNG_GEM,
           CASE WHEN p % 33 <> 0 THEN upper(substr(md5('nir' || p), 1, 17)) END AS BEN_NIR_ANO,
           CASE WHEN p % 33 <> 0 THEN upper(substr(md5('nir' || p), 1, 17))
                ELSE upper(substr(md5(p::VARCHAR), 1, 17)) || '1' END AS BEN_IDT_ANO,
           (p % 33 <> 0)::INTEGER::VARCHAR AS BEN_IDT_TOP, '00' AS BEN_CDI_NIR,
           (1 + p % 2)::VARCHAR AS BEN_SEX_COD, (1930 + p % 90)::VARCHAR AS BEN_NAI_ANN,
           lpad((1 + p % 12)::VARCHAR, 2, '0') AS BEN_NAI_MOI,
           lpad((p % 95 + 1)::VARCHAR, 3, '0') AS BEN_RES_DPT,
           lpad((p % 900 + 1)::VARCHAR, 3, '0') AS BEN_RES_COM,
           CASE WHEN p % 150 = 0 THEN '2025-06-30' ELSE '1600-01-01' END AS BEN_DCD_DTE,
           '01C075000' AS ORG_AFF_BEN, '2010-01-01' AS BEN_DTE_INS, '2025-06-01' AS BEN_DTE_MAJ,
           '2025-12-01' AS MAX_TRT_DTD
    FROM range({persons}) t(p)
"""
OPT_OUT = """
    SELECT upper(substr(md5(p::VARCHAR), 1, 17)) AS BEN_NIR_PSA, '1' AS BEN_RNG_GEM,
           '2024-03-01' AS OPT_OUT_DTE, NULL AS OPT_END_DTE, 'ALL' AS OPT_SCOPE, 'ACTIVE' AS OPT_STATUS
    FROM range(0, {persons}, 997) t(p)
"""


def generate(raw: Path, rows: int) -> None:
    """Write the raw tables under ``raw`` in the ingestion layout."""
    persons = max(1, rows // CLAIMS_PER_PERSON)
    first = {"delivery": "bench-001", "loaded": "2026-01-05 10:00:00"}
    # 1 % of the claims delivered again, later, with another amount: the staging keeps these.
    second = {"delivery": "bench-002", "loaded": "2026-02-05 10:00:00"}

    def write(connection, dataset: str, delivery: dict, index: int, select: str) -> None:
        folder = raw / "cnam" / delivery["delivery"] / dataset
        folder.mkdir(parents=True, exist_ok=True)
        lineage = LINEAGE.format(dataset=dataset, **delivery)
        select = registry_columns_select(connection, dataset, select)
        connection.execute(
            f"COPY (SELECT *, {lineage} FROM ({select})) "
            f"TO '{folder / f'part-{index:03d}.parquet'}' (FORMAT parquet, COMPRESSION zstd)"
        )

    with duckdb.connect(config={"threads": 2, "memory_limit": "4GB"}) as connection:
        connection.execute("SET enable_progress_bar = false")
        for index, start in enumerate(range(0, rows, ROWS_PER_FILE)):
            claims = CLAIMS.format(persons=persons, start=start, stop=min(rows, start + ROWS_PER_FILE))
            connection.execute(f"CREATE OR REPLACE TEMP VIEW claims AS {claims}")
            write(connection, "ER_PRS_F", first, index, ER_PRS_F.format(paid_divisor=100))
            write(connection, "ER_PHA_F", first, index, ER_PHA_F)
        connection.execute(
            f"CREATE OR REPLACE TEMP VIEW claims AS SELECT * FROM ({CLAIMS}) WHERE i % 100 = 0".format(
                persons=persons, start=0, stop=rows
            )
        )
        write(connection, "ER_PRS_F", second, 0, ER_PRS_F.format(paid_divisor=90))
        write(connection, "IR_BEN_R", first, 0, IR_BEN_R.format(persons=persons))
        write(connection, "OPT_OUT", first, 0, OPT_OUT.format(persons=persons))


def environment(warehouse: Path, raw: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HDH_WAREHOUSE_PATH": str(warehouse),
        "HDH_RAW_ROOT": str(raw),
        "HDH_DUCKDB_MEMORY_LIMIT": MEMORY_LIMIT,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``command`` to completion: (wall-clock seconds, peak RSS in MiB, stdout + stderr).

    The peak is the child's own (``wait4``), not the largest of every child this script started.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f"{command[0]} {command[1]} failed:\n{output[-8000:]}")
    return seconds, usage.ru_maxrss / 1024, output


def dbt_command(verb: str, target: Path) -> list[str]:
    return [
        str(DBT), verb, "--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT),
        "--target-path", str(target), "--log-path", str(target / "logs"),
    ]  # fmt: skip


def execution_plan(target: Path) -> list[dict]:
    """The seed, models and tests of dbt's manifest in an order that respects their dependencies."""
    nodes = json.loads((target / "manifest.json").read_text())["nodes"]
    runnable = {
        uid: node for uid, node in nodes.items() if node["resource_type"] in ("seed", "model", "test")
    }
    graph = {
        uid: [d for d in node["depends_on"].get("nodes", []) if d in runnable]
        for uid, node in runnable.items()
    }
    return [runnable[uid] for uid in TopologicalSorter(graph).static_order()]


def run_direct(warehouse: Path, target: Path) -> None:
    """The compiled SQL of the last ``dbt build`` in ``target``, in order, on one DuckDB connection."""
    plan = execution_plan(target)
    with duckdb.connect(str(warehouse), config={"memory_limit": MEMORY_LIMIT}) as connection:
        for schema in sorted({node["schema"] for node in plan if node["resource_type"] != "test"}):
            connection.execute(f"CREATE SCHEMA {schema}")
        for node in plan:
            if node["resource_type"] == "seed":
                types = ", ".join(f"'{c}': '{t}'" for c, t in node["config"]["column_types"].items())
                seed_file = PROJECT / node["original_file_path"]
                connection.execute(
                    f"CREATE TABLE {node['relation_name']} AS SELECT * FROM "
                    f"read_csv('{seed_file}', header = true, columns = {{{types}}})"
                )
                continue
            sql = Path(node["compiled_path"]).read_text()
            if node["resource_type"] == "model":
                connection.execute(f"CREATE TABLE {node['relation_name']} AS {sql}")
                continue
            failures = connection.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
            if failures and node["config"]["severity"].lower() == "error":
                raise RuntimeError(f"{node['name']} failed on {failures} rows")


def row_counts(warehouse: Path) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        tables = connection.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() ORDER BY 1"
        ).fetchall()
        return {t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for (t,) in tables}


def fresh(warehouse: Path) -> Path:
    """Remove a warehouse file and its spill and WAL companions; return its path."""
    for leftover in warehouse.parent.glob(warehouse.name + "*"):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    return warehouse


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="ER_PRS_F rows (default 10 M)")
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs of each side (default 2); the best counts"
    )
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new one under bench/work)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    # Internal: the direct side runs in its own process so that its peak memory is its own.
    parser.add_argument(
        "--direct", nargs=2, type=Path, metavar=("WAREHOUSE", "TARGET"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.direct:
        run_direct(*args.direct)
        return

    (REPO / "bench" / "work").mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="normalise-", dir=REPO / "bench" / "work"))
    raw, target = work / "raw", work / "target"
    # Both warehouses are named warehouse.duckdb (the compiled SQL names the catalog after the file), and
    # dbt's is always the same path so that its partial parse stays valid from one run to the next.
    warehouses = {side: work / side / "warehouse.duckdb" for side in ("dbt", "direct")}
    for warehouse in warehouses.values():
        warehouse.parent.mkdir(parents=True, exist_ok=True)
    env = environment(warehouses["dbt"], raw)
    try:
        started = time.perf_counter()
        generate(raw, args.rows)
        print(
            f"raw tables: {args.rows:,} claims generated in {time.perf_counter() - started:.1f} s", flush=True
        )
        # Deployment parses the project once (dagster-dbt's DbtProject.prepare_if_dev / `dagster-dbt project
        # prepare-and-package`); runs then reuse target/partial_parse.msgpack.
        parse_seconds, _, _ = run_measured(dbt_command("parse", target), env)
        print(f"dbt parse (once, as at deployment): {parse_seconds:.1f} s", flush=True)
        dbt_runs, direct_runs = [], []
        for attempt in range(args.repeat):
            fresh(warehouses["dbt"])
            wall, dbt_peak, _ = run_measured(dbt_command("build", target), env)
            executed = json.loads((target / "run_results.json").read_text())["elapsed_time"]
            dbt_runs.append((wall, executed, dbt_peak))
            direct, direct_peak, _ = run_measured(
                [sys.executable, __file__, "--direct", str(fresh(warehouses["direct"])), str(target)], env
            )
            direct_runs.append((direct, direct_peak))
            counts = row_counts(warehouses["dbt"])
            if counts != row_counts(warehouses["direct"]):
                raise RuntimeError("dbt and the direct SQL built different tables")
            plan = execution_plan(target)
            print(
                f"run {attempt + 1}: dbt build {wall:.1f} s (dbt's own execution {executed:.1f} s, "
                f"peak RSS {dbt_peak:,.0f} MiB), "
                f"direct SQL {direct:.1f} s (peak RSS {direct_peak:,.0f} MiB), "
                f"ratio {wall / direct:.2f}x ({sum(n['resource_type'] == 'model' for n in plan)} models, "
                f"{sum(n['resource_type'] == 'test' for n in plan)} tests, "
                f"stg_er_prs_f {counts['staging.stg_er_prs_f']:,} rows, "
                f"drug_exposure {counts['omop.drug_exposure']:,} rows)",
                flush=True,
            )
        best_wall, best_executed, _ = min(dbt_runs)
        best_direct = min(direct for direct, _ in direct_runs)
        print(
            f"best: dbt build {best_wall:.1f} s (execution {best_executed:.1f} s), "
            f"direct SQL {best_direct:.1f} s, ratio {best_wall / best_direct:.2f}x (target <= 1.3x); "
            f"peak RSS dbt {max(peak for *_, peak in dbt_runs):,.0f} MiB, "
            f"direct {max(peak for _, peak in direct_runs):,.0f} MiB "
            f"(DuckDB memory_limit {MEMORY_LIMIT})"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
