"""Benchmark: the ER_PRS_F suite via hdh_pipelines.quality (GX on DuckDB) against the same checks in raw SQL.

Not a test. Generates an ER_PRS_F-like raw table (all VARCHAR, lineage columns,
a few planted defects) with DuckDB into Parquet, then times, each in its own
subprocess so that peak RSS (``ru_maxrss`` of the child) is its own:

- ``gx``: ``validate_table(ER_PRS_F, files)``, the full suite (generated + hand-written);
- ``sql-per-check``: the same checks as raw DuckDB SQL, one count query per check
  (and, like GX, up to five examples for each failing check);
- ``sql-combined``: the same, with all row-wise checks in one query (uniqueness
  needs its own ``GROUP BY``), i.e. the fastest hand-written form.

The raw SQL is derived from the same suite (each GX expectation type has one SQL
translation below), so both sides check exactly the same things on the same
view.

``--small-tables N`` measures the other end, the fixed cost of a table: N SNDS
tables of 10 rows (the HDH synthetic samples of generated datasets, read from
``../shared/reference/snds/synthetic-snds`` at run time, spread over the names),
validated as the gate validates one delivery (``small-gx``: ``validate_tables``,
one GX context for all), one ``validate_table`` each (``small-gx-per-table``: a
context, data source and database per table), and as the same checks in direct
DuckDB SQL on one connection (``small-sql``). Usage::

    .venv/bin/python bench/quality.py                    # 1 M and 10 M rows
    .venv/bin/python bench/quality.py --rows 1000000     # one size
    .venv/bin/python bench/quality.py --small-tables 40  # fixed cost per table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from hdh_devtools.raw_tables import registry_columns_select
from hdh_pipelines.core.sql import quote_literal

MODES = ("gx", "sql-per-check", "sql-combined")
SMALL_MODES = ("small-gx", "small-gx-per-table", "small-sql")
# Rows of one Parquet file: a large delivery arrives as several files.
ROWS_PER_FILE = 2_500_000
SAMPLES = Path(__file__).resolve().parents[2] / "shared/reference/snds/synthetic-snds/schemas"


def generate(directory: Path, rows: int) -> list[Path]:
    """Write an ER_PRS_F-like raw table of ``rows`` rows; about 1 row in 100,000 carries a defect."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    with duckdb.connect(config={"threads": 2, "memory_limit": "2GB"}) as connection:
        connection.execute("SET enable_progress_bar = false")
        for start in range(0, rows, ROWS_PER_FILE):
            path = directory / f"er_prs_f_{start // ROWS_PER_FILE:03d}.parquet"
            stop = min(rows, start + ROWS_PER_FILE)
            columns = registry_columns_select(
                connection,
                "ER_PRS_F",
                f"""
                WITH r AS (SELECT i, hash(i) AS h, DATE '2024-01-01' + (hash(i, 1) % 365)::INTEGER AS care
                           FROM range({start}, {stop}) t(i))
                SELECT (100000000 + i // 3)::VARCHAR AS DCT_ORD_NUM,
                       strftime(date_trunc('month', care) + INTERVAL 1 MONTH, '%Y-%m-%d') AS FLX_DIS_DTD,
                       (1 + h % 20)::VARCHAR AS FLX_EMT_NUM, (h % 10000)::VARCHAR AS FLX_EMT_ORD,
                       '1' AS FLX_EMT_TYP,
                       strftime(date_trunc('month', care) + INTERVAL 25 DAY, '%Y-%m-%d') AS FLX_TRT_DTD,
                       '01C' || lpad((h % 95 + 1)::VARCHAR, 3, '0') || '000' AS ORG_CLE_NUM,
                       (1 + i % 3)::VARCHAR AS PRS_ORD_NUM, '1' AS REM_TYP_AFF,
                       upper(substr(md5((i // 7)::VARCHAR), 1, CASE WHEN i % 250000 = 7 THEN 15 ELSE 17 END))
                           AS BEN_NIR_PSA,
                       '1' AS BEN_RNG_GEM,
                       CASE WHEN i % 100000 = 11 THEN '9' ELSE (1 + (h >> 3) % 2)::VARCHAR END AS BEN_SEX_COD,
                       (1930 + (h >> 5) % 90)::VARCHAR AS BEN_NAI_ANN,
                       lpad(((h >> 7) % 95 + 1)::VARCHAR, 3, '0') AS BEN_RES_DPT,
                       lpad(((h >> 9) % 900 + 1)::VARCHAR, 3, '0') AS BEN_RES_COM,
                       strftime(care, '%Y-%m-%d') AS EXE_SOI_DTD,
                       CASE WHEN h % 4 = 0 THEN '1600-01-01' ELSE strftime(care, '%Y-%m-%d') END
                           AS EXE_SOI_DTF,
                       ['1111', '1112', '3311', '3313'][(1 + (h >> 11) % 4)::BIGINT] AS PRS_NAT_REF,
                       ['1111', '1112', '3311', '3313'][(1 + (h >> 11) % 4)::BIGINT] AS BSE_PRS_NAT,
                       '1' AS PRS_ACT_QTE,
                       CASE WHEN i % 200000 = 13 THEN '12,50'
                            ELSE printf('%.2f', ((h >> 13) % 10000) / 100) END AS PRS_PAI_MNT,
                       printf('%.2f', ((h >> 13) % 10000) / 100) AS BSE_REM_BSE,
                       printf('%.2f', ((h >> 13) % 10000) / 140) AS BSE_REM_MNT,
                       CASE WHEN (h >> 17) % 20 = 0 THEN '71' ELSE '0' END AS DPN_QLF,
                       '0' AS CPL_MAJ_TOP, ((h >> 19) % 80)::VARCHAR AS PSE_SPE_COD
                FROM r
                """,
            )
            connection.execute(
                f"COPY (SELECT *, 'cnam' AS hdh_provider, 'bench-001' AS hdh_delivery_id, "
                f"'ER_PRS_F' AS hdh_dataset, TIMESTAMP '2026-01-01 00:00:00' AS hdh_loaded_at "
                f"FROM ({columns})) "
                f"TO {quote_literal(str(path))} (FORMAT parquet, COMPRESSION zstd)"
            )
            files.append(path)
    return files


def _count_sql(expectation, schema) -> tuple[str, str]:
    """(row condition of an unexpected value, column to sample) of a row-wise expectation, in raw SQL."""
    from hdh_pipelines.quality.suites import column_sql

    config = expectation.configuration
    kwargs = config.kwargs
    column = kwargs.get("column")
    value = f"({column_sql(schema, column)})" if column else None
    if config.type == "expect_column_values_to_not_be_null":
        return f"{value} IS NULL", value
    if config.type == "expect_column_values_to_be_null":
        return f"{value} IS NOT NULL", value
    if config.type == "expect_column_values_to_be_in_set":
        values = ", ".join(quote_literal(v) if isinstance(v, str) else str(v) for v in kwargs["value_set"])
        return f"{value} NOT IN ({values})", value
    if config.type in ("expect_column_values_to_be_between", "expect_column_value_lengths_to_be_between"):
        measured = f"length({value})" if "lengths" in config.type else value
        bounds = []
        for key, operator in (("min_value", "<"), ("max_value", ">")):
            bound = kwargs.get(key)
            if isinstance(bound, dict):  # a suite parameter: today, current_year
                bound = {"today": "current_date", "current_year": "year(current_date)"}[bound["$PARAMETER"]]
            elif isinstance(bound, str):
                bound = quote_literal(bound)
            if bound is not None:
                bounds.append(f"{measured} {operator} {bound}")
        return " OR ".join(bounds), value
    if config.type == "expect_column_value_lengths_to_equal":
        return f"length({value}) <> {kwargs['value']}", value
    raise ValueError(f"no raw SQL translation for {config.type}")


def run_sql(files: list[Path], combined: bool, memory_limit: str) -> dict[str, int]:
    """The ER_PRS_F suite as raw DuckDB SQL over the same view; returns check name -> unexpected count."""
    from hdh_pipelines.registry import default_registry

    config = {"threads": 2, "memory_limit": memory_limit, "autoinstall_known_extensions": False}
    with tempfile.TemporaryDirectory() as scratch, duckdb.connect(config=config) as connection:
        connection.execute(f"SET temp_directory = {quote_literal(scratch)}")
        return _sql_checks(connection, default_registry().resolve("ER_PRS_F"), files, combined, "t")


def _sql_checks(connection, schema, files: list[Path], combined: bool, view: str) -> dict[str, int]:
    """``schema``'s suite as raw SQL over a view ``view`` of ``files``; check name -> unexpected count."""
    from hdh_pipelines.quality.suites import build_suite, raw_columns_sql

    suite = build_suite(schema)
    source = ", ".join(quote_literal(str(f)) for f in files)
    counts: dict[str, int] = {}
    row_wise, queries = {}, {}
    for expectation in suite.expectations:
        config = expectation.configuration
        if config.meta.get("related"):
            continue  # not evaluated without the related dataset, as in validate_table
        if config.type == "unexpected_rows_expectation":
            queries[config.meta["name"]] = config.kwargs["unexpected_rows_query"].format(batch=view)
        else:
            row_wise[config.meta["name"]] = _count_sql(expectation, schema)
    connection.execute(
        f"CREATE VIEW {view} AS SELECT {raw_columns_sql(schema)} "
        f"FROM read_parquet([{source}], union_by_name = true)"
    )
    if combined and row_wise:
        sums = ", ".join(f"count(*) FILTER (WHERE {cond})" for cond, _ in row_wise.values())
        counts.update(zip(row_wise, connection.execute(f"SELECT {sums} FROM {view}").fetchone(), strict=True))
    else:
        for name, (cond, _) in row_wise.items():
            counts[name] = connection.execute(f"SELECT count(*) FROM {view} WHERE {cond}").fetchone()[0]
    for name, (cond, value) in row_wise.items():
        if counts[name]:
            connection.execute(f"SELECT {value} FROM {view} WHERE {cond} LIMIT 5").fetchall()
    for name, query in queries.items():
        counts[name] = connection.execute(f"SELECT count(*) FROM ({query})").fetchone()[0]
        if counts[name]:
            connection.execute(f"{query} LIMIT 5").fetchall()
    return counts


def small_tables(directory: Path, count: int) -> list[Path]:
    """``count`` 10-row raw tables, ``<DATASET>/sample.parquet``: samples of generated datasets."""
    from hdh_pipelines.registry import default_registry
    from hdh_pipelines.registry.generate import GENERATED_KEY

    if not SAMPLES.is_dir():
        raise SystemExit(f"--small-tables reads the SNDS synthetic samples; {SAMPLES} is missing.")
    registry = default_registry()
    samples = [
        (schema, path)
        for path in sorted(SAMPLES.rglob("*.csv"))
        if (schema := registry.resolve(path.stem)) is not None and GENERATED_KEY in schema.raw
    ]
    files = []
    with duckdb.connect(config={"autoinstall_known_extensions": False}) as connection:
        for schema, path in samples[:: max(1, len(samples) // count)][:count]:
            target = directory / schema.name / "sample.parquet"
            target.parent.mkdir(parents=True)
            # As the raw loader stores them: every cell text, empty cells NULL.
            csv = f"read_csv({quote_literal(str(path))}, all_varchar = true, header = true)"
            connection.execute(f"COPY (SELECT * FROM {csv}) TO {quote_literal(str(target))} (FORMAT parquet)")
            files.append(target)
    return files


def run_small(mode: str, files: list[Path]) -> dict[str, dict[str, int]]:
    """Validate each ``<DATASET>/*.parquet`` in ``mode``; dataset -> check name -> unexpected count."""
    from hdh_pipelines.quality import RawTable, build_suite, validate_table, validate_tables
    from hdh_pipelines.registry import default_registry

    schemas = [default_registry().resolve(f.parent.name) for f in files]
    if mode == "small-sql":
        config = {"threads": 2, "autoinstall_known_extensions": False}
        with duckdb.connect(config=config) as connection:
            return {
                schema.name: _sql_checks(connection, schema, [file], True, f"t{index}")
                for index, (schema, file) in enumerate(zip(schemas, files, strict=True))
            }
    if mode == "small-gx":
        tables = [
            RawTable(schema, [file], build_suite(schema)) for schema, file in zip(schemas, files, strict=True)
        ]
        reports = validate_tables(tables)
    else:
        reports = {
            schema.name: validate_table(schema, [file]) for schema, file in zip(schemas, files, strict=True)
        }
    return {
        name: {o.name: o.unexpected_count for o in report.outcomes if o.evaluated}
        for name, report in reports.items()
    }


def run_gx(files: list[Path], memory_limit: str) -> dict[str, int]:
    from hdh_pipelines.quality import DuckDBSettings, validate_table
    from hdh_pipelines.registry import default_registry

    settings = DuckDBSettings(memory_limit=memory_limit, threads=2)
    report = validate_table(default_registry().resolve("ER_PRS_F"), files, settings=settings)
    return {o.name: o.unexpected_count for o in report.outcomes if o.evaluated}


def child(mode: str, memory_limit: str, files: list[Path]) -> None:
    """Run one mode in this process and print its timing as JSON (the parent reads ``ru_maxrss``)."""
    import hdh_pipelines.quality  # noqa: F401  (import time is not validation time)

    started = time.perf_counter()
    if mode in SMALL_MODES:
        counts = run_small(mode, files)
    elif mode == "gx":
        counts = run_gx(files, memory_limit)
    else:
        counts = run_sql(files, combined=mode == "sql-combined", memory_limit=memory_limit)
    print(json.dumps({"seconds": time.perf_counter() - started, "counts": counts}))


def measure(mode: str, memory_limit: str, files: list[Path]) -> dict:
    """Run ``mode`` in a fresh subprocess; return its seconds, peak RSS (MiB) and counts.

    ``os.wait4`` gives the resource usage of that one child, which
    ``getrusage(RUSAGE_CHILDREN)`` would merge with every earlier child's.
    """
    command = [sys.executable, __file__, "--child", mode, "--memory-limit", memory_limit, *map(str, files)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{mode} failed with exit code {process.returncode}")
    return {**json.loads(output.strip().splitlines()[-1]), "peak_mib": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, action="append", help="table size (repeatable; default 1 M and 10 M)"
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs per mode (the fastest is reported)")
    parser.add_argument(
        "--memory-limit", default="1GB", help="DuckDB memory_limit of every mode (default 1GB)"
    )
    parser.add_argument(
        "--small-tables", type=int, metavar="N", help="instead: the fixed cost of N tables of 10 rows"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.memory_limit, [Path(f) for f in args.files])
        return
    if args.small_tables:
        bench_small_tables(args.small_tables, args.repeat, args.memory_limit)
        return
    for rows in args.rows or [1_000_000, 10_000_000]:
        with tempfile.TemporaryDirectory(prefix="hdh-bench-quality-") as folder:
            started = time.perf_counter()
            files = generate(Path(folder), rows)
            size = sum(f.stat().st_size for f in files) / 2**20
            print(
                f"\n{rows:,} rows: {len(files)} Parquet files, {size:,.0f} MiB, "
                f"generated in {time.perf_counter() - started:.1f} s"
            )
            results = {}
            for _ in range(args.repeat):
                for mode in MODES:  # interleaved, so that a slow moment of the machine hits every mode
                    run = measure(mode, args.memory_limit, files)
                    if mode not in results or run["seconds"] < results[mode]["seconds"]:
                        results[mode] = run
            reference = results["sql-per-check"]["counts"]
            for mode, run in results.items():
                agree = "same counts" if run["counts"] == reference else f"COUNTS DIFFER: {run['counts']}"
                print(f"  {mode:14} {run['seconds']:7.2f} s  peak RSS {run['peak_mib']:6,.0f} MiB  {agree}")
            gx_seconds = results["gx"]["seconds"]
            for mode in ("sql-per-check", "sql-combined"):
                print(f"  ratio gx / {mode}: {gx_seconds / results[mode]['seconds']:.2f}")


def bench_small_tables(count: int, repeat: int, memory_limit: str) -> None:
    """Print seconds per 10-row table of each small mode, and the ratio of GX to direct SQL."""
    with tempfile.TemporaryDirectory(prefix="hdh-bench-quality-small-") as folder:
        files = small_tables(Path(folder), count)
        print(f"\n{len(files)} tables of 10 rows (SNDS synthetic samples), os.getloadavg() {os.getloadavg()}")
        results = {}
        for _ in range(repeat):
            for mode in SMALL_MODES:  # interleaved, as above
                run = measure(mode, memory_limit, files)
                if mode not in results or run["seconds"] < results[mode]["seconds"]:
                    results[mode] = run
        reference = results["small-sql"]["counts"]
        for mode, run in results.items():
            agree = "same counts" if run["counts"] == reference else "COUNTS DIFFER"
            print(
                f"  {mode:18} {run['seconds']:7.2f} s  {run['seconds'] / len(files):6.3f} s per table  "
                f"peak RSS {run['peak_mib']:5,.0f} MiB  {agree}"
            )
        sql_seconds = results["small-sql"]["seconds"]
        for mode in ("small-gx", "small-gx-per-table"):
            print(f"  ratio {mode} / small-sql: {results[mode]['seconds'] / sql_seconds:.1f}")


if __name__ == "__main__":
    main()
