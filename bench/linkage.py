"""Benchmark: the asset's linkage (Splink on Spark) against Splink on DuckDB, on the same generated data.

Not a test. For each error rate (``--error-rates``, default 5 % and 20 %), a
warehouse is generated with ``hdh_devtools.linkage_testdata`` (the dbt
models' tables and a truth table): ``--persons`` (the largest of the list,
default 1 M) and ``--cohort`` records (default 100 k). Then, each in a
process of its own so that its peak memory is its own:

- ``spark``: ``run_linkage`` as the asset runs it (stage the inputs as
  Parquet; verified pseudonym links, then Splink on Spark ``local[*]`` for the
  rest, one to one; write and publish the outputs), session start-up
  included;
- ``splink``: Splink 5 on DuckDB, one pass over every record (the pseudonym as
  an exact-match comparison, the same quasi-identifier levels and blocking
  rules, u by random sampling, m by EM on two blocking rules, predictions at
  0.9, then a one-to-one rule: a record's single best candidate, kept only if
  no other record claims that person).

Both are scored against the truth (precision, recall, F1) and the Spark
figures are printed as ratios to the peer's of the same run (the machine's
load affects both alike). With several ``--persons`` sizes, the Spark linkage
alone then runs at each smaller size with a cohort of a tenth of the persons
(capped by ``--cohort``) at the first error rate, for the scaling points. Peak
memory is the largest sum of the resident memory of the child's process tree
(Python and, for Spark, the JVM), sampled every 0.2 s.

The defaults (50 k persons × 5 k records, 5 % and 20 %) finish in a few minutes
on two busy cores; docs/linkage.md records the figures and the decision.

    .venv/bin/python bench/linkage.py [--persons 50000 [200000 ...]] [--cohort 5000]
        [--error-rates 0.05 0.2] [--work DIR] [--keep] [--skip-peer]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hdh_devtools.linkage_testdata import TRUTH_TABLE, LinkageTestSpec, write_linkage_test_data  # noqa: E402
from hdh_pipelines.linkage.quality import quality_against_truth  # noqa: E402

SPLINK_THRESHOLD = 0.9
# The records and persons as Splink sees them, harmonised as the Spark linkage harmonises them;
# the SNDS side has one row per pseudonym so that the pseudonym can be compared.
SPLINK_INPUTS = """
CREATE TABLE cohort_side AS
SELECT hdh_provider || '|' || coh_rec_id AS unique_id, 'cohort' AS source_dataset,
       nullif(upper(trim(ben_nir_psa)), '') AS psa, nai_ann AS birth_year, nai_moi AS birth_month,
       CASE WHEN sex_cod IN (1, 2) THEN sex_cod END AS sex, upper(res_dpt) AS dpt, upper(res_com) AS commune,
       dcd_dte AS death_date, inc_dte AS inclusion_date, NULL::VARCHAR AS ben_idt_ano
FROM staging.stg_cohort_ext;
CREATE TABLE snds_side AS
SELECT p.ben_idt_ano || '|' || s.ben_nir_psa || '|' || s.ben_rng_gem AS unique_id, 'snds' AS source_dataset,
       p.ben_idt_ano, s.ben_nir_psa AS psa, p.birth_year, p.birth_month,
       CASE WHEN p.sex_code IN (1, 2) THEN p.sex_code END AS sex,
       CASE WHEN p.residence_departement LIKE '97_' THEN p.residence_departement
            ELSE substr(p.residence_departement, 2, 2) END AS dpt,
       CASE WHEN p.residence_departement LIKE '97_' THEN '97' || p.residence_commune
            ELSE substr(p.residence_departement, 2, 2) || p.residence_commune END AS commune,
       p.death_date, NULL::DATE AS inclusion_date
FROM marts.persons p JOIN intermediate.int_pseudonym_persons s USING (ben_idt_ano)
"""


def _levels(column: str, near: bool) -> list[dict]:
    levels = [
        {
            "sql_condition": f'"{column}_l" IS NULL OR "{column}_r" IS NULL',
            "label_for_charts": "missing",
            "is_null_level": True,
        },
        {"sql_condition": f'"{column}_l" = "{column}_r"', "label_for_charts": "exact"},
    ]
    if near:
        levels.append(
            {"sql_condition": f'abs("{column}_l" - "{column}_r") = 1', "label_for_charts": "one_off"}
        )
    return [*levels, {"sql_condition": "ELSE", "label_for_charts": "different"}]


def splink_child(warehouse: str, out: str) -> dict:
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    connection = duckdb.connect()
    connection.execute(f"ATTACH '{warehouse}' AS wh (READ_ONLY); USE wh")
    connection.execute("CREATE SCHEMA memory.work; USE memory.work")
    connection.execute(
        SPLINK_INPUTS.replace("staging.", "wh.staging.")
        .replace("marts.", "wh.marts.")
        .replace("intermediate.", "wh.intermediate.")
    )
    residence = cl.CustomComparison(
        output_column_name="residence",
        comparison_levels=[
            {
                "sql_condition": "(dpt_l IS NULL OR dpt_r IS NULL) "
                "AND (commune_l IS NULL OR commune_r IS NULL)",
                "label_for_charts": "missing",
                "is_null_level": True,
            },
            {"sql_condition": "commune_l = commune_r AND dpt_l = dpt_r", "label_for_charts": "same_commune"},
            {"sql_condition": "commune_l = commune_r", "label_for_charts": "same_commune_other_dpt"},
            {"sql_condition": "dpt_l = dpt_r", "label_for_charts": "same_dpt"},
            {"sql_condition": "ELSE", "label_for_charts": "different"},
        ],
    )
    death = cl.CustomComparison(
        output_column_name="death",
        comparison_levels=[
            {
                "sql_condition": "death_date_l IS NULL AND death_date_r IS NULL",
                "label_for_charts": "missing",
                "is_null_level": True,
            },
            {"sql_condition": "death_date_r < inclusion_date_l", "label_for_charts": "contradicts"},
            {
                "sql_condition": "death_date_l IS NULL OR death_date_r IS NULL",
                "label_for_charts": "one_known",
            },
            {
                "sql_condition": "abs(datediff('day', death_date_l, death_date_r)) <= 31",
                "label_for_charts": "same",
            },
            {"sql_condition": "ELSE", "label_for_charts": "different"},
        ],
    )
    settings = SettingsCreator(
        link_type="link_only",
        comparisons=[
            cl.ExactMatch("psa"),
            cl.CustomComparison(
                output_column_name="birth_year", comparison_levels=_levels("birth_year", True)
            ),
            cl.CustomComparison(
                output_column_name="birth_month", comparison_levels=_levels("birth_month", True)
            ),
            cl.CustomComparison(output_column_name="sex", comparison_levels=_levels("sex", False)),
            residence,
            death,
        ],
        blocking_rules_to_generate_predictions=[
            block_on("psa"),
            block_on("birth_year", "birth_month", "sex"),
            block_on("birth_year", "dpt", "commune"),
            block_on("birth_year", "birth_month", "dpt"),
            block_on("birth_month", "sex", "commune"),
        ],
        additional_columns_to_retain=["ben_idt_ano"],
    )
    started = time.perf_counter()
    db_api = DuckDBAPI(connection)
    linker = Linker(
        [
            db_api.register("cohort_side", dataset_display_name="cohort"),
            db_api.register("snds_side", dataset_display_name="snds"),
        ],
        settings,
        log_level=40,
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("psa"))
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("birth_year", "dpt", "commune")
    )
    predictions = linker.inference.predict(threshold_match_probability=SPLINK_THRESHOLD)
    connection.execute(f"""
        COPY (
            WITH pairs AS (
                SELECT split_part(unique_id_l, '|', 1) AS hdh_provider,
                       split_part(unique_id_l, '|', 2) AS coh_rec_id,
                       ben_idt_ano_r AS ben_idt_ano, max(match_weight) AS weight
                FROM {predictions.physical_name} GROUP BY ALL
            ), best AS (
                SELECT * FROM pairs
                QUALIFY count(*) OVER (PARTITION BY hdh_provider, coh_rec_id, weight) = 1
                    AND rank() OVER (PARTITION BY hdh_provider, coh_rec_id ORDER BY weight DESC) = 1
            )
            SELECT * FROM best QUALIFY count(*) OVER (PARTITION BY ben_idt_ano) = 1
        ) TO '{out}' (FORMAT parquet)""")
    return {"seconds": time.perf_counter() - started}


def spark_child(warehouse: str, root: str) -> dict:
    from dagster_pyspark.resources import spark_session_from_config

    from hdh_pipelines.linkage.pipeline import run_linkage
    from hdh_pipelines.linkage.resources import spark_config
    from hdh_pipelines.linkage.storage import LinkageRoot
    from hdh_pipelines.normalisation.warehouse import DuckDBWarehouse

    started = time.perf_counter()
    spark = spark_session_from_config(
        spark_config(
            master="local[*]",
            driver_memory="6g",
            shuffle_partitions=4,
            local_dir=f"{root}/spark-tmp",
            extra={"spark.ui.enabled": "false"},
        )
    )
    spark.sparkContext.setLogLevel("ERROR")
    run = run_linkage(
        spark,
        LinkageRoot.from_uri(f"{root}/linkage"),
        DuckDBWarehouse(Path(warehouse)),
        truth_table=TRUTH_TABLE,
    )
    return {
        "seconds": time.perf_counter() - started,
        "quality": run.quality,
        "stats": run.stats,
        "durations": run.durations,
        "version": run.version,
    }


def run_child(*args: str) -> tuple[dict, float, float]:
    """(the child's JSON, wall seconds, peak MiB of the child's whole process tree, sampled every 0.2 s)."""
    started = time.perf_counter()
    child = psutil.Popen(
        [sys.executable, __file__, "--child", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = 0
    while child.poll() is None:
        try:
            tree = [child, *child.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.2)
    stdout, stderr = child.communicate()
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{stderr[-4000:]}")
    return json.loads(stdout.strip().splitlines()[-1]), wall, peak / 2**20


def generate(folder: Path, persons: int, cohort: int, error_rate: float) -> tuple[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    warehouse = str(folder / "warehouse.duckdb")
    with duckdb.connect(warehouse) as connection:
        write_linkage_test_data(
            connection, LinkageTestSpec(persons=persons, cohort=cohort, error_rate=error_rate)
        )
        truth = str(folder / "truth.parquet")
        connection.execute(f"COPY {TRUTH_TABLE} TO '{truth}' (FORMAT parquet)")
    return warehouse, truth


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--persons", type=int, nargs="+", default=[50_000])
    parser.add_argument("--cohort", type=int, default=5_000)
    parser.add_argument("--error-rates", type=float, nargs="+", default=[0.05, 0.2])
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--skip-peer", action="store_true", help="Spark only")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        print(json.dumps(spark_child(*rest) if kind == "spark" else splink_child(*rest), default=str))
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="hdh-bench-linkage-"))
    largest = max(args.persons)
    measured: dict[tuple[int, int], tuple[dict, float]] = {}
    try:
        print(
            f"== Asset linkage (Splink on Spark) vs Splink on DuckDB: {largest:,} persons x "
            f"{args.cohort:,} cohort records =="
        )
        for rate in args.error_rates:
            folder = work / f"peer-{rate}"
            warehouse, truth = generate(folder, largest, args.cohort, rate)
            ours, wall, peak = run_child("spark", warehouse, str(folder))
            if rate == args.error_rates[0]:
                measured[(largest, args.cohort)] = (ours, wall)
            quality = ours["quality"]
            print(
                f"error {rate:.0%} splink-spark : {wall:6.1f} s wall "
                f"({ours['seconds']:.1f} s in process), peak "
                f"{peak:,.0f} MiB, precision {quality['precision']:.4f} recall {quality['recall']:.4f} "
                f"F1 {quality['f1']:.4f}, linkage rate {ours['stats']['linkage_rate']:.4f}, ambiguous "
                f"{ours['stats']['ambiguous_share']:.4f}, det {ours['stats']['deterministic_links']:,} prob "
                f"{ours['stats']['probabilistic_links']:,}, 1:1 violations "
                f"{quality['persons_linked_twice'] + quality['records_linked_twice']}",
                flush=True,
            )
            if not args.skip_peer:
                peer_out = str(folder / "splink_links.parquet")
                peer, peer_wall, peak = run_child("splink", warehouse, peer_out)
                q = quality_against_truth(peer_out, truth)
                print(
                    f"error {rate:.0%} splink-duckdb: {peer_wall:6.1f} s wall "
                    f"({peer['seconds']:.1f} s in process), peak "
                    f"{peak:,.0f} MiB, precision {q['precision']:.4f} recall {q['recall']:.4f} "
                    f"F1 {q['f1']:.4f}",
                    flush=True,
                )
                print(
                    f"error {rate:.0%} spark / duckdb: wall x{wall / peer_wall:.2f}, "
                    f"F1 {quality['f1'] - q['f1']:+.4f}, "
                    f"precision {quality['precision'] - q['precision']:+.4f}, "
                    f"recall {quality['recall'] - q['recall']:+.4f}",
                    flush=True,
                )
            shutil.rmtree(folder, ignore_errors=True)
        if len(args.persons) > 1:
            print(
                f"== Scaling, asset linkage (Splink on Spark), error {args.error_rates[0]:.0%}, "
                "cohort = persons / 10 =="
            )
        for persons in sorted(args.persons) if len(args.persons) > 1 else []:
            cohort = min(args.cohort, persons // 10)
            if (persons, cohort) in measured:  # the same run as above: not repeated
                ours, wall = measured[(persons, cohort)]
            else:
                folder = work / f"scale-{persons}"
                warehouse, _ = generate(folder, persons, cohort, args.error_rates[0])
                ours, wall, _ = run_child("spark", warehouse, str(folder))
                shutil.rmtree(folder, ignore_errors=True)
            print(
                f"{persons:>9,} persons x {cohort:>7,} records: {wall:6.1f} s wall, link "
                f"{ours['durations']['link_seconds']:.1f} s, F1 {ours['quality']['f1']:.4f}",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
