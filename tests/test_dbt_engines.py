"""The dbt project builds the same rows on DuckDB and on Spark (issue 15).

One delivered raw root (the golden hand-made inputs of test_dbt_models, with
their sentinel dates, re-deliveries, twins, opt-outs and PMSI formats) is
built by the real `dbt` twice: into a DuckDB file (HDH_WAREHOUSE_ENGINE=duckdb)
and through dbt-spark's session method into Parquet tables
(HDH_WAREHOUSE_ENGINE=spark, one local Spark session in the dbt process). Every
mart, OMOP table and algorithm must hold the same rows, compared
order-insensitively with their Python types. The Spark tables are read through
the warehouse interface the Dagster stages use (SparkParquetWarehouse), the
DuckDB ones through DuckDBWarehouse.
"""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal
from functools import partial
from pathlib import Path

import pytest
from dbt_inputs import run_dbt
from test_dbt_models import in_parallel, write_golden_inputs

from hdh_pipelines.normalisation.warehouse import DuckDBWarehouse, SparkParquetWarehouse, Warehouse

COMPARED_SCHEMAS = ("marts", "omop", "algorithms")

# Small inputs: one shuffle partition and no whole-stage code generation make
# each of Spark's queries cost milliseconds instead of seconds of compiling; one
# whole build in one run needs no metastore (Derby takes a minute to create).
SPARK_TEST_ENV = {
    "HDH_WAREHOUSE_ENGINE": "spark",
    "HDH_SPARK_CATALOG": "in-memory",
    "HDH_SPARK_MASTER": "local[2]",
    "HDH_SPARK_SHUFFLE_PARTITIONS": "1",
    "HDH_SPARK_WHOLE_STAGE_CODEGEN": "false",
    "HDH_DBT_THREADS": "4",
}


@pytest.fixture(scope="module")
def warehouses(tmp_path_factory: pytest.TempPathFactory) -> tuple[Warehouse, Warehouse]:
    folder = tmp_path_factory.mktemp("engines")
    raw_root = folder / "raw"
    write_golden_inputs(raw_root)
    duckdb_file = folder / "warehouse.duckdb"
    spark_folder = folder / "spark_warehouse"
    in_parallel(
        partial(run_dbt, "run", warehouse=duckdb_file, raw_root=raw_root, target=folder / "target_duckdb"),
        partial(
            run_dbt,
            "run",
            warehouse=folder / "unused.duckdb",
            raw_root=raw_root,
            target=folder / "target_spark",
            env={**SPARK_TEST_ENV, "HDH_SPARK_WAREHOUSE_DIR": str(spark_folder)},
        ),
    )
    return DuckDBWarehouse(duckdb_file), SparkParquetWarehouse(spark_folder)


def compared_relations(warehouse: Warehouse) -> list[str]:
    with warehouse.read_only() as connection:
        rows = connection.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            f"where table_schema in ({', '.join('?' for _ in COMPARED_SCHEMAS)})",
            list(COMPARED_SCHEMAS),
        ).fetchall()
    return sorted(relation for (relation,) in rows)


def typed(value: object) -> tuple[str, object]:
    """A value with its Python type; doubles to 9 significant digits, since the engines sum in
    different orders; integers whatever their width."""
    if isinstance(value, float) and math.isfinite(value):
        return "float", float(f"{value:.9g}")
    if isinstance(value, Decimal) and value == value.to_integral_value():
        # DuckDB sums integers as HUGEINT (Arrow decimal(38, 0)), Spark as BIGINT: both integers.
        return "int", int(value)
    return type(value).__name__, value


def typed_rows(warehouse: Warehouse, relation: str) -> tuple[list[str], Counter]:
    """Column names (sorted: Spark moves partition columns last) and the multiset of typed rows."""
    table = warehouse.read_table(relation)
    columns = sorted(table.column_names)
    rows = zip(*(table.column(name).to_pylist() for name in columns), strict=True)
    return columns, Counter(tuple(typed(value) for value in row) for row in rows)


def test_spark_builds_every_compared_table(warehouses):
    on_duckdb, on_spark = warehouses
    expected = compared_relations(on_duckdb)
    assert {relation.split(".")[0] for relation in expected} == set(COMPARED_SCHEMAS)
    # A Spark table without a file (partitioned, no row) is invisible to the reader: compare rows.
    missing = [relation for relation in expected if relation not in compared_relations(on_spark)]
    assert all(on_duckdb.read_table(relation).num_rows == 0 for relation in missing), missing


@pytest.mark.parametrize("schema", COMPARED_SCHEMAS)
def test_both_engines_hold_the_same_rows(warehouses, schema):
    on_duckdb, on_spark = warehouses
    spark_relations = set(compared_relations(on_spark))
    compared = [relation for relation in compared_relations(on_duckdb) if relation.startswith(f"{schema}.")]
    differences = {}
    for relation in compared:
        if relation not in spark_relations:
            continue
        duckdb_columns, duckdb_rows = typed_rows(on_duckdb, relation)
        spark_columns, spark_rows = typed_rows(on_spark, relation)
        if relation == "omop.cdm_source":
            # The release date is the day of the build: the two builds may straddle midnight.
            index = duckdb_columns.index("cdm_release_date")
            duckdb_rows = Counter(row[:index] + row[index + 1 :] for row in duckdb_rows.elements())
            spark_rows = Counter(row[:index] + row[index + 1 :] for row in spark_rows.elements())
        if duckdb_columns != spark_columns:
            differences[relation] = f"columns {duckdb_columns} != {spark_columns}"
        elif duckdb_rows != spark_rows:
            differences[relation] = (
                f"{sum(duckdb_rows.values())} rows on DuckDB, {sum(spark_rows.values())} on Spark; "
                f"only on DuckDB: {list((duckdb_rows - spark_rows).elements())[:3]}; "
                f"only on Spark: {list((spark_rows - duckdb_rows).elements())[:3]}"
            )
    assert not differences, differences
    assert any(sum(typed_rows(on_duckdb, relation)[1].values()) for relation in compared), "nothing compared"


def test_spark_tables_are_parquet_under_the_configured_folder(warehouses):
    _, on_spark = warehouses
    folder = on_spark.relation_path("marts.claims")
    assert folder.parent.name == "marts.db"
    # The monthly models are partitioned by their date column, one folder per value.
    assert any(path.name.startswith("flx_dis_dtd=") for path in folder.iterdir())
    assert next(Path(folder).rglob("*.parquet"), None) is not None
