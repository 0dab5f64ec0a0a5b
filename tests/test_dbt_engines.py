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

The readers after normalisation then run on both builds and must agree: a
project workspace, the open dataset, the catalogue statistics and the rights
lookup. Last, on the same builds (the module's tests run in file order), a
later delivery opts a person out and corrects a March claim, March is run
again as Dagster runs a monthly partition, on Spark through its Hive metastore
as in production: the month is replaced, the opted-out person leaves every
month, both engines agree, and the workspace purge reads the new registry
from either engine.
"""

from __future__ import annotations

import json
import math
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import yaml
from dbt_inputs import (
    NIR_P1,
    PARTITIONED,
    claim,
    in_parallel,
    opt_out,
    psa,
    run_dbt,
    write_golden_inputs,
    write_raw,
)

from hdh_pipelines.catalogue.sources import warehouse_descriptions
from hdh_pipelines.catalogue.statistics import warehouse_statistics
from hdh_pipelines.normalisation.manifest import read_manifest
from hdh_pipelines.normalisation.warehouse import DuckDBWarehouse, SparkParquetWarehouse, Warehouse
from hdh_pipelines.open_science import publish_open_dispensations
from hdh_pipelines.rights.access import person_of
from hdh_pipelines.workspaces import WorkspaceSettings, materialise_workspace
from hdh_pipelines.workspaces.purge import purge_workspace

# The setup of a test may hold a whole build on both engines, or the monthly run: minutes each on a
# busy two-core machine.
pytestmark = pytest.mark.timeout(1200)

COMPARED_SCHEMAS = ("marts", "omop", "algorithms")
REPO = Path(__file__).resolve().parents[1]
PROJECT = "diabetes-drug-use"
TODAY = date(2026, 6, 1)
MONTH = ("2025-03-01", "2025-04-01")
THIRD = datetime(2026, 3, 5, 10, 0)

# Small inputs: one shuffle partition and the profile's settings for small
# inputs (no code generation, no adaptive re-planning, a fast-starting JVM) make
# each of Spark's queries cost milliseconds instead of seconds of compiling. The
# monthly run needs the tables to outlive the build, so they are named in a Derby
# metastore as in production: its creation (up to a minute on a loaded machine)
# is the price of testing that path.
SPARK_TEST_ENV = {
    "HDH_WAREHOUSE_ENGINE": "spark",
    "HDH_SPARK_CATALOG": "hive",
    "HDH_SPARK_MASTER": "local[2]",
    "HDH_SPARK_SHUFFLE_PARTITIONS": "1",
    "HDH_SPARK_SMALL_INPUTS": "true",
    "HDH_DBT_THREADS": "4",
}


@dataclass(frozen=True)
class Builds:
    folder: Path
    raw_root: Path
    on_duckdb: DuckDBWarehouse
    on_spark: SparkParquetWarehouse

    def run_both(self, *args: str, partition: tuple[str, str] | None = None) -> None:
        """The same dbt command on both engines, side by side."""
        in_parallel(
            partial(
                run_dbt,
                *args,
                warehouse=self.on_duckdb.path,
                raw_root=self.raw_root,
                target=self.folder / "target_duckdb",
                partition=partition,
            ),
            partial(
                run_dbt,
                *args,
                warehouse=self.folder / "unused.duckdb",
                raw_root=self.raw_root,
                target=self.folder / "target_spark",
                partition=partition,
                env={**SPARK_TEST_ENV, "HDH_SPARK_WAREHOUSE_DIR": str(self.on_spark.location.local)},
            ),
        )


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    folder = tmp_path_factory.mktemp("engines")
    built = Builds(
        folder,
        folder / "raw",
        DuckDBWarehouse(folder / "warehouse.duckdb"),
        SparkParquetWarehouse(folder / "spark_warehouse"),
    )
    write_golden_inputs(built.raw_root)
    built.run_both("run")
    return built


@pytest.fixture(scope="module")
def warehouses(builds: Builds) -> tuple[Warehouse, Warehouse]:
    return builds.on_duckdb, builds.on_spark


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
    return rows_of(warehouse.read_table(relation))


def rows_of(table: pa.Table) -> tuple[list[str], Counter]:
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
    assert on_spark.relation_uri("marts.claims") == f"{on_spark.location.uri}/marts.db/claims"
    folder = on_spark.location.local / "marts.db" / "claims"
    # The monthly models are partitioned by their date column, one folder per value.
    assert any(path.name.startswith("flx_dis_dtd=") for path in folder.iterdir())
    assert next(Path(folder).rglob("*.parquet"), None) is not None


# --- the readers after normalisation, on either engine -------------------------------------------


def write_project(folder: Path) -> Path:
    """The sample project's regulatory file with every person of the golden inputs and four datasets."""
    document = yaml.safe_load((REPO / "projects" / f"{PROJECT}.yaml").read_text(encoding="utf-8"))
    document |= {
        "datasets": {
            "persons": ["sex_code", "birth_year"],
            "claims": ["care_start_date", "benefit_nature_code", "amount_reimbursed"],
            "drug_dispensations": ["dispensing_date", "atc_code", "boxes"],
            "hospital_stays": ["stay_start_date", "principal_diagnosis", "ghm_code"],
        },
        "population": {"predicate": "persons.birth_year >= 1900"},
        "study_period": {"start": "2025-01-01", "end": "2025-12-31"},
        "output_formats": ["parquet", "duckdb"],
    }
    projects = folder / "projects"
    projects.mkdir(exist_ok=True)
    (projects / f"{PROJECT}.yaml").write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return projects


@dataclass(frozen=True)
class Workspaces:
    on_duckdb: WorkspaceSettings
    on_spark: WorkspaceSettings


@pytest.fixture(scope="module")
def workspaces(builds: Builds) -> Workspaces:
    """The project's workspace materialised from each warehouse, with the same key."""
    projects = write_project(builds.folder)
    secrets_file = builds.folder / "workspace-secrets.yaml"
    secrets_file.write_text(yaml.safe_dump({"projects": {PROJECT: secrets.token_hex(32)}}))
    secrets_file.chmod(0o600)
    descriptions = read_manifest(builds.folder / "target_duckdb" / "manifest.json").column_descriptions()
    settings = {
        engine: WorkspaceSettings(
            root=builds.folder / f"workspaces_{engine}",
            warehouse=warehouse,
            projects_dir=projects,
            audit_root=builds.folder / f"audit_{engine}",
            secrets_file=secrets_file,
            column_descriptions=descriptions,
        )
        for engine, warehouse in (("duckdb", builds.on_duckdb), ("spark", builds.on_spark))
    }
    months = [f"2025-{month:02d}" for month in range(1, 13)]
    for engine in settings.values():
        materialise_workspace(engine, PROJECT, months, run_id="ci", requester="ci", today=TODAY)
    return Workspaces(settings["duckdb"], settings["spark"])


def workspace_contents(settings: WorkspaceSettings) -> dict[str, tuple[list[str], Counter]]:
    """Each dataset's typed rows, and the workspace.duckdb tables' too."""
    folder = settings.root / PROJECT
    contents = {}
    with duckdb.connect() as connection:
        for path in sorted((folder / "parquet").iterdir()):
            if path.is_dir() and not any(path.glob("*/*.parquet")):
                # A partitioned dataset left without a row (a purge) has no file.
                contents[path.stem] = ([], Counter())
                continue
            files = str(path / "*" / "*.parquet") if path.is_dir() else str(path)
            contents[path.stem] = rows_of(
                connection.sql(
                    f"select * from read_parquet('{files}', hive_partitioning = true)"
                ).to_arrow_table()
            )
        connection.execute(f"attach '{folder / 'workspace.duckdb'}' as copy (read_only)")
        for name in list(contents):
            contents[f"workspace.duckdb/{name}"] = rows_of(
                connection.sql(f"select * from copy.{name}").to_arrow_table()
            )
    return contents


def workspace_manifest(settings: WorkspaceSettings) -> dict:
    return json.loads((settings.root / PROJECT / "manifest.json").read_text(encoding="utf-8"))


def comparable_manifest(settings: WorkspaceSettings) -> dict:
    manifest = workspace_manifest(settings)
    return {key: manifest[key] for key in ("datasets", "population", "months", "opt_out_registry_version")}


def test_a_workspace_is_the_same_from_either_engine(workspaces: Workspaces):
    on_duckdb = workspace_contents(workspaces.on_duckdb)
    assert set(on_duckdb) >= {"persons", "claims", "drug_dispensations", "hospital_stays"}
    assert all(sum(rows.values()) for _, rows in on_duckdb.values()), "an empty dataset compares nothing"
    assert workspace_contents(workspaces.on_spark) == on_duckdb
    assert comparable_manifest(workspaces.on_spark) == comparable_manifest(workspaces.on_duckdb)
    spark_manifest = workspace_manifest(workspaces.on_spark)
    assert spark_manifest["warehouse"]["engine"] == "spark"
    assert spark_manifest["warehouse"]["name"] == "spark_warehouse"


def test_open_data_catalogue_statistics_and_rights_lookup_agree(builds: Builds):
    published = {}
    for warehouse in (builds.on_duckdb, builds.on_spark):
        with warehouse.read_only() as connection:
            protected, _, metadata = publish_open_dispensations(
                connection,
                warehouse,
                builds.folder / f"public_{warehouse.engine}",
                now=datetime(2026, 6, 1, tzinfo=UTC),
            )
        assert metadata["data_versions"]["warehouse_engine"] == warehouse.engine
        published[warehouse.engine] = (
            protected.table.to_csv(index=False),
            metadata["data_versions"]["tables"],
        )
    assert published["spark"] == published["duckdb"]

    manifest = read_manifest(builds.folder / "target_duckdb" / "manifest.json")
    compared = 0
    for description in warehouse_descriptions(manifest):
        on_duckdb = warehouse_statistics(description, builds.on_duckdb, reference=TODAY)
        on_spark = warehouse_statistics(description, builds.on_spark, reference=TODAY)
        if on_spark is None:
            # A partitioned table without a row has no file on Spark.
            assert on_duckdb is None or on_duckdb.records == 0, description.relation
            continue
        assert on_spark == on_duckdb, description.relation
        compared += bool(on_duckdb.records or on_duckdb.records_suppressed)
    assert compared >= 3

    assert person_of(builds.on_spark, psa("A"), 1) == person_of(builds.on_duckdb, psa("A"), 1) == NIR_P1
    assert person_of(builds.on_spark, psa("nobody"), 1) is None


# --- the monthly path, last: it changes the builds -----------------------------------------------


@pytest.fixture(scope="module")
def month_run_again(builds: Builds, workspaces: Workspaces) -> Builds:
    """Person P1 (pseudonyms A and B) opts out and claim 8 (March) is corrected, then March alone is run
    again on both engines, as a monthly partition of the Dagster assets runs it (the workspaces were made
    before, from the builds as they were)."""
    write_raw(
        builds.raw_root, "OPT_OUT", [opt_out("A", "1", "2026-03-01")], delivery_id="d4", loaded_at=THIRD
    )
    write_raw(
        builds.raw_root,
        "ER_PRS_F",
        [claim(8, "2025-03-01", "U", "1", "2025-02-20", paid="44.00")],
        delivery_id="d4",
        loaded_at=THIRD,
    )
    builds.run_both("run", "--select", "+tag:hdh_partitioned", partition=MONTH)
    return builds


def test_a_month_runs_again_on_spark_and_the_opt_out_leaves_every_month(month_run_again: Builds):
    on_spark = month_run_again.on_spark
    with on_spark.read_only() as connection:
        claims = dict(
            connection.execute("select dct_ord_num, amount_reimbursed from marts.claims").fetchall()
        )
        persons_left = connection.execute(
            "select count(*) from marts.claims where ben_idt_ano = ?", [NIR_P1]
        ).fetchone()[0]
    # March replaced: the correction is in; P1's claims of January, March and April are gone.
    assert float(claims[8]) == 44.0
    assert not {1, 2, 7, 10} & set(claims) and persons_left == 0
    assert {3, 6, 8} <= set(claims)
    differences = {
        relation: "differ"
        for relation in PARTITIONED
        if relation.startswith("marts.")
        and typed_rows(month_run_again.on_duckdb, relation) != typed_rows(on_spark, relation)
    }
    assert not differences, differences


def test_the_workspace_purge_reads_the_new_registry_from_either_engine(
    month_run_again: Builds, workspaces: Workspaces
):
    outcomes = {
        engine: purge_workspace(settings, PROJECT, run_id="purge")
        for engine, settings in (("duckdb", workspaces.on_duckdb), ("spark", workspaces.on_spark))
    }
    assert outcomes["spark"].outcome == outcomes["duckdb"].outcome == "purged"
    assert outcomes["spark"].persons_removed == outcomes["duckdb"].persons_removed == 1
    assert outcomes["spark"].registry_version == outcomes["duckdb"].registry_version
    assert outcomes["spark"].registry_version["latest_delivery"].endswith("/d4")
    assert workspace_contents(workspaces.on_spark) == workspace_contents(workspaces.on_duckdb)
