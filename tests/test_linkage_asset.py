"""The linkage multi-asset on a real local Spark session over a DuckDB warehouse built here, and over the
same tables as Parquet in a Spark warehouse (HDH_WAREHOUSE_ENGINE=spark), read there without a copy."""

from __future__ import annotations

import json
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from dagster_pyspark import PySparkResource
from dagster_pyspark.resources import spark_session_from_config

from hdh_devtools.linkage_testdata import (
    PROVIDER,
    TRUTH_TABLE,
    LinkageTestSpec,
    published_rows,
    write_linkage_test_data,
)
from hdh_pipelines.core.constants import WAREHOUSE_POOL
from hdh_pipelines.linkage.assets import (
    AMBIGUOUS,
    LINKS,
    QUALITY_CHECK,
    UNLINKED,
    LinkageConfig,
    cohort_linkage,
)
from hdh_pipelines.linkage.engine import LinkageInputs, LinkageSettings, link
from hdh_pipelines.linkage.pipeline import link_staged, stage
from hdh_pipelines.linkage.resources import LinkageStorageResource
from hdh_pipelines.linkage.storage import INPUT_QUERIES, OUTPUT_TABLES, LinkageRoot, LinkageStorageError
from hdh_pipelines.normalisation.resources import WarehouseResource
from hdh_pipelines.normalisation.warehouse import DuckDBWarehouse, SparkParquetWarehouse, Warehouse


@pytest.fixture(scope="module")
def spark_resource(linkage_spark_config: dict[str, Any]) -> Iterator[PySparkResource]:
    resource = PySparkResource(spark_config=linkage_spark_config)
    # The session starts once here, quiet; the resource's getOrCreate() reuses it in every run.
    spark_session_from_config(resource.spark_config).sparkContext.setLogLevel("ERROR")
    yield resource


def test_spark_runs_in_a_step_that_holds_no_warehouse_pool() -> None:
    """Staging and publication open the warehouse (pool); the Spark step reads only the staged files."""
    pools = {node.name: node.pool for node in cohort_linkage.node_def.node_defs}
    assert pools == {
        "stage_linkage_inputs": WAREHOUSE_POOL,
        "link_on_spark": None,
        "publish_linkage": WAREHOUSE_POOL,
    }


def _materialize(
    spark_resource: PySparkResource,
    folder: Path,
    spec: LinkageTestSpec | None,
    config: LinkageConfig,
    warehouse: WarehouseResource | None = None,
) -> dg.ExecuteInProcessResult:
    """One run of the asset; over the DuckDB file ``folder/warehouse.duckdb`` (the spec's data written
    into it first) unless another ``warehouse`` is given."""
    if warehouse is None:
        warehouse = WarehouseResource(path=str(folder / "warehouse.duckdb"))
        with duckdb.connect(warehouse.path) as connection:
            if spec is not None:
                write_linkage_test_data(connection, spec)
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [cohort_linkage],
            instance=instance,
            resources={
                "spark": spark_resource,
                "linkage_storage": LinkageStorageResource(
                    warehouse=warehouse, linkage_root=str(folder / "linkage")
                ),
            },
            run_config=dg.RunConfig({"cohort_linkage": config}),
            raise_on_error=False,
        )


def _check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == QUALITY_CHECK]
    return evaluation


@dataclass(frozen=True)
class Materialised:
    folder: Path
    result: dg.ExecuteInProcessResult


@pytest.fixture(scope="module")
def materialised(spark_resource: PySparkResource, tmp_path_factory: pytest.TempPathFactory) -> Materialised:
    """5 000 persons × 800 records at 5 % errors, plus an opted-out person's record and its look-alike
    (``_plant_opted_out_record``), materialised once for the module: the metadata test and the opt-out
    test assert on the same run."""
    folder = tmp_path_factory.mktemp("materialised")
    with duckdb.connect(str(folder / "warehouse.duckdb")) as connection:
        write_linkage_test_data(connection, MATERIALISED_SPEC)
        _plant_opted_out_record(connection)
    config = LinkageConfig(truth_table=TRUTH_TABLE, u_max_pairs=2e5)
    return Materialised(folder, _materialize(spark_resource, folder, None, config))


def test_materialises_the_three_tables_with_quality_metadata(materialised: Materialised) -> None:
    result, tmp_path = materialised.result, materialised.folder
    assert result.success
    materialized = {m.asset_key: m for m in result.get_asset_materialization_events()}
    assert set(materialized) == {LINKS, UNLINKED, AMBIGUOUS}
    metadata = {k: v.value for k, v in materialized[LINKS].materialization.metadata.items()}
    assert metadata["precision"] >= 0.995 and metadata["recall"] > 0.9 and metadata["f1"] > 0.95
    assert metadata["linkage_rate"] >= 0.9
    assert 0 <= metadata["ambiguous_share"] < 0.05
    assert metadata["em_converged"] is True
    # Counts under 11 are never shown; pseudonymised identifiers never appear in metadata.
    shown = [v for k, v in metadata.items() if k.endswith(("_records", "_links"))]
    assert all(v == "<11" or v == 0 or v >= 11 for v in shown)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as connection:
        identifiers = {r[0] for r in connection.execute("SELECT ben_idt_ano FROM marts.persons").fetchall()}
    assert not any(identifier in str(metadata) for identifier in identifiers)
    assert _check(result).passed

    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as connection:
        columns = {r[0] for r in connection.execute("DESCRIBE linkage.links").fetchall()}
        assert {
            "coh_rec_id",
            "ben_idt_ano",
            "method",
            "match_probability",
            "match_weight",
            "rule",
            "comparison_vector",
            "flags",
        } <= columns
        assert connection.execute("SELECT count(*) FROM linkage.unlinked").fetchall()[0][0] >= 0
        assert connection.execute("SELECT count(*) FROM linkage.ambiguous").fetchall()[0][0] >= 0


def _summary(folder: Path) -> dict[str, Any]:
    """The published run's summary (stats, quality, model) under ``folder/linkage``."""
    root = LinkageRoot.from_uri(str(folder / "linkage"))
    version = root.current_version()
    assert version is not None
    return root.read_summary(version) | {"version": version}


def test_five_percent_errors_meet_the_targets(materialised: Materialised) -> None:
    """The accuracy targets on the 5 % population: precision ≥ 0.995 allows at most 3 false links among
    about 760; every record in exactly one output, each person and record linked once at most."""
    assert materialised.result.success
    summary = _summary(materialised.folder)
    stats, quality = summary["stats"], summary["quality"]
    assert quality["precision"] >= 0.995
    assert stats["linkage_rate"] >= 0.90
    assert quality["persons_linked_twice"] == 0 and quality["records_linked_twice"] == 0
    assert stats["probabilistic_links"] > 0 and stats["id_rejected_records"] > 0

    with duckdb.connect(str(materialised.folder / "warehouse.duckdb"), read_only=True) as connection:
        methods = dict(connection.execute("SELECT method, count(*) FROM linkage.links GROUP BY 1").fetchall())
        assert set(methods) == {"deterministic", "probabilistic"}
        rejected_ids_linked_as_given = connection.execute(
            "SELECT count(*) FROM linkage.links "
            "WHERE method = 'deterministic' AND list_contains(flags, 'id_rejected')"
        ).fetchall()[0][0]
        assert rejected_ids_linked_as_given == 0
        outputs = sum(
            connection.execute(f"SELECT count(*) FROM linkage.{t}").fetchall()[0][0] for t in OUTPUT_TABLES
        )
        # Records under an opted-out person's pseudonym (the planted one among them) are set aside
        # before linkage; every other record is in exactly one of the three tables.
        delivered, set_aside = connection.execute(
            "SELECT count(*), count(*) FILTER (WHERE upper(trim(ben_nir_psa)) IN "
            "(SELECT upper(trim(ben_nir_psa)) FROM intermediate.int_opt_out_exclusions)) "
            "FROM staging.stg_cohort_ext"
        ).fetchone()
    assert delivered == MATERIALISED_SPEC.cohort + 1 and set_aside > 1
    assert outputs + set_aside == delivered
    version_dir = materialised.folder / "linkage" / "outputs" / summary["version"]
    assert stat.S_IMODE(version_dir.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in version_dir.rglob("*") if p.is_file())


def test_a_rerun_replaces_the_outputs_with_the_same_rows(
    spark_resource: PySparkResource, materialised: Materialised, tmp_path: Path
) -> None:
    """Rows are identified by their keys, not by generated numbers: materialised again (on a copy of the
    module's warehouse and linkage root), the asset publishes the same rows under a new version and keeps
    no other."""
    shutil.copytree(materialised.folder, tmp_path, dirs_exist_ok=True)
    first = _summary(tmp_path)
    again = _materialize(
        spark_resource, tmp_path, None, LinkageConfig(truth_table=TRUTH_TABLE, u_max_pairs=2e5)
    )
    assert again.success
    second = _summary(tmp_path)
    assert second["version"] != first["version"] and second["stats"] == first["stats"]
    assert [p.name for p in (tmp_path / "linkage" / "outputs").iterdir()] == [second["version"]]
    rows = published_rows(tmp_path / "warehouse.duckdb")
    assert rows == published_rows(materialised.folder / "warehouse.duckdb")
    assert len(rows["links"]) == first["stats"]["deterministic_links"] + first["stats"]["probabilistic_links"]
    assert all(rows.values())  # every table has rows to compare


def test_check_fails_when_the_linkage_rate_drops_below_ninety_percent(
    spark_resource: PySparkResource, tmp_path: Path
) -> None:
    """A third of the cohort is not in the SNDS: the asset materialises, its check fails."""
    spec = LinkageTestSpec(persons=5_000, cohort=800, error_rate=0.05, no_match_rate=0.3, seed=4)
    result = _materialize(spark_resource, tmp_path, spec, LinkageConfig(u_max_pairs=2e5))
    assert result.success
    evaluation = _check(result)
    assert not evaluation.passed
    assert evaluation.metadata["linkage_rate"].value < 0.9
    assert "below 90%" in (evaluation.description or "")


def test_missing_inputs_fail_with_a_reason(spark_resource: PySparkResource, tmp_path: Path) -> None:
    result = _materialize(spark_resource, tmp_path, None, LinkageConfig(u_max_pairs=2e5))
    assert not result.success
    failure = result.failure_data_for_node("cohort_linkage.stage_linkage_inputs")
    assert failure is not None
    # An empty warehouse: the opt-out registry is the first input read, before anything is staged.
    assert failure.user_failure_data.metadata["reason"].value == "opt_out_registry_missing"
    assert not (tmp_path / "linkage" / "outputs").exists()


# An opted-out person (not in marts.persons) and a look-alike who did not opt out: same sex, birth
# year and month, département and commune. The cohort holds a record of the opted-out person only.
OPTED_OUT = ("OPTEDOUTPSA000001", "OPTED-OUT-PERSON")
LOOKALIKE = ("LOOKALIKEPSA00001", "LOOKALIKE-PERSON")
OPTED_OUT_RECORD = "REC-OPTED-OUT"
MATERIALISED_SPEC = LinkageTestSpec(persons=5_000, cohort=800, error_rate=0.05, seed=2)


def _plant_opted_out_record(connection: duckdb.DuckDBPyConnection) -> None:
    for (psa, person), opted_out in ((OPTED_OUT, True), (LOOKALIKE, False)):
        connection.execute(
            "INSERT INTO intermediate.int_pseudonym_persons BY NAME "
            "SELECT ? AS ben_nir_psa, 1 AS ben_rng_gem, ? AS ben_idt_ano, 2 AS ben_sex_cod, "
            "1961 AS ben_nai_ann, 7 AS ben_nai_moi, '029' AS ben_res_dpt, '232' AS ben_res_com",
            [psa, person],
        )
        if opted_out:
            connection.execute(
                "INSERT INTO intermediate.int_opt_out_exclusions VALUES (?, 1, ?)", [psa, person]
            )
        else:
            connection.execute(
                "INSERT INTO marts.persons BY NAME "
                "SELECT ? AS ben_idt_ano, 2 AS sex_code, 1961 AS birth_year, 7 AS birth_month, "
                "'029' AS residence_departement, '232' AS residence_commune",
                [person],
            )
    connection.execute(
        "INSERT INTO staging.stg_cohort_ext BY NAME "
        "SELECT ? AS coh_rec_id, ? AS ben_nir_psa, 1961 AS nai_ann, 7 AS nai_moi, 2 AS sex_cod, "
        "'29' AS res_dpt, '29232' AS res_com, DATE '2025-03-01' AS inc_dte, "
        "'I210' AS evt_dgn, 1 AS evt_killip, ? AS hdh_provider",
        [OPTED_OUT_RECORD, OPTED_OUT[0], PROVIDER],
    )


def test_an_opted_out_persons_cohort_record_is_set_aside_not_matched_to_a_lookalike(
    spark_resource: PySparkResource, materialised: Materialised, tmp_path: Path
) -> None:
    warehouse = materialised.folder / "warehouse.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        # Near miss: staged without the set-aside, the record would be linked to the look-alike.
        unfiltered = {}
        for name, query in INPUT_QUERIES.items():
            unfiltered[name] = tmp_path / f"unfiltered-{name}.parquet"
            connection.execute(f"COPY ({query}) TO '{unfiltered[name]}' (FORMAT parquet)")
    spark = spark_session_from_config(spark_resource.spark_config)
    control = link(
        spark,
        LinkageInputs(**{k: spark.read.parquet(v.as_uri()) for k, v in unfiltered.items()}),
        LinkageSettings(u_max_pairs=2e5),
    )
    linked = {
        (row["coh_rec_id"], row["ben_idt_ano"], row["method"])
        for row in control.links.where(f"coh_rec_id = '{OPTED_OUT_RECORD}'").collect()
    }
    control.release()
    assert linked == {(OPTED_OUT_RECORD, LOOKALIKE[1], "probabilistic")}

    assert materialised.result.success
    root = materialised.folder / "linkage"
    (version,) = [p.name for p in (root / "inputs").iterdir()]
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        staged = connection.execute(
            f"SELECT count(*) FROM '{root / 'inputs' / version / 'cohort.parquet'}' "
            "WHERE coh_rec_id = ? OR ben_nir_psa = ?",
            [OPTED_OUT_RECORD, OPTED_OUT[0]],
        ).fetchall()
        staged_pseudonyms = connection.execute(
            f"SELECT count(*) FROM '{root / 'inputs' / version / 'pseudonyms.parquet'}' "
            "WHERE ben_idt_ano = ?",
            [OPTED_OUT[1]],
        ).fetchall()
        outputs = connection.execute(
            "SELECT count(*) FROM (SELECT coh_rec_id, ben_idt_ano, [] AS candidates FROM linkage.links "
            "UNION ALL SELECT coh_rec_id, NULL, [] FROM linkage.unlinked "
            "UNION ALL SELECT coh_rec_id, NULL, candidate_ben_idt_anos FROM linkage.ambiguous) "
            "WHERE coh_rec_id = ? OR ben_idt_ano = ? OR list_contains(candidates, ?)",
            [OPTED_OUT_RECORD, LOOKALIKE[1], LOOKALIKE[1]],
        ).fetchall()
    # Never staged, so never in a candidate pair; in no output; the look-alike linked to nobody.
    assert staged == staged_pseudonyms == outputs == [(0,)]


def test_the_nightly_job_plans_linkage_after_the_steps_that_build_its_inputs(monkeypatch, tmp_path) -> None:
    """The nightly job builds linkage's upstream tables in the same run: Dagster must accept the wiring.

    Planning needs every resource's configuration, read from the environment; any path will do.
    """
    from dagster._core.execution.api import create_execution_plan

    from hdh_pipelines.definitions import defs

    package = Path(__file__).resolve().parents[1] / "hdh_pipelines"
    names = {
        match.group(1)
        for source in package.rglob("*.py")
        for match in re.finditer(r'EnvVar\("([A-Z_]+)"\)', source.read_text(encoding="utf-8"))
    }
    for name in names:
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    plan = create_execution_plan(defs.resolve_job_def("nightly_refresh_job"))
    steps = plan.step_keys_to_execute
    assert "cohort_linkage.stage_linkage_inputs" in steps and "cohort_linkage.link_on_spark" in steps


# --- the Spark warehouse engine ---------------------------------------------------------------------

# Every pair of this population is in the u sample (a sample of everything is the same on both runs,
# whatever order Spark reads the rows in), and a fiftieth of the persons opted out.
SPARK_ENGINE_SPEC = LinkageTestSpec(persons=1_000, cohort=150, error_rate=0.05, opt_out_rate=0.02, seed=21)
SPARK_ENGINE_CONFIG = LinkageConfig(truth_table=TRUTH_TABLE, u_max_pairs=1e6)


@dataclass(frozen=True)
class BothEngines:
    duckdb_folder: Path
    spark_folder: Path
    spark_warehouse: SparkParquetWarehouse
    on_duckdb: dg.ExecuteInProcessResult
    on_spark: dg.ExecuteInProcessResult


def _write_as_dbt_spark_does(spark_resource: PySparkResource, duckdb_file: Path, folder: Path) -> None:
    """Every table of the DuckDB warehouse as a Spark Parquet table under ``folder`` (``<schema>.db/<table>``,
    several part files), written by Spark as dbt-spark writes its models."""
    spark = spark_session_from_config(spark_resource.spark_config)
    exported = folder.parent / "exported"
    exported.mkdir()
    with duckdb.connect(str(duckdb_file), read_only=True) as connection:
        relations = connection.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE'"
        ).fetchall()
        for (relation,) in relations:
            connection.execute(f"COPY {relation} TO '{exported / relation}.parquet' (FORMAT parquet)")
    for (relation,) in relations:
        schema, table = relation.split(".")
        frame = spark.read.parquet(str(exported / f"{relation}.parquet"))
        frame.repartition(2).write.parquet(str(folder / f"{schema}.db" / table))


@pytest.fixture(scope="module")
def both_engines(spark_resource: PySparkResource, tmp_path_factory: pytest.TempPathFactory) -> BothEngines:
    """The same delivered tables linked over a DuckDB warehouse, then over a Spark warehouse."""
    duckdb_folder = tmp_path_factory.mktemp("on-duckdb")
    on_duckdb = _materialize(spark_resource, duckdb_folder, SPARK_ENGINE_SPEC, SPARK_ENGINE_CONFIG)
    spark_folder = tmp_path_factory.mktemp("on-spark")
    # Given as a file:// URI: the same file-system code (pyarrow.fs) that reads s3a:// and abfss://
    # warehouses, which cannot run here (no S3 or ADLS server; not mocked).
    spark_warehouse = SparkParquetWarehouse((spark_folder / "spark_warehouse").as_uri())
    _write_as_dbt_spark_does(
        spark_resource, duckdb_folder / "warehouse.duckdb", spark_folder / "spark_warehouse"
    )
    on_spark = _materialize(
        spark_resource,
        spark_folder,
        None,
        SPARK_ENGINE_CONFIG,
        WarehouseResource(
            path=str(spark_folder / "unused.duckdb"),
            engine="spark",
            spark_warehouse_dir=spark_warehouse.location.uri,
        ),
    )
    return BothEngines(duckdb_folder, spark_folder, spark_warehouse, on_duckdb, on_spark)


def _published(warehouse: Warehouse) -> dict[str, set[tuple]]:
    """The published outputs' decisions, through the warehouse interface (order-insensitive)."""
    queries = {
        "links": "SELECT hdh_provider, coh_rec_id, ben_idt_ano, method, rule, round(match_weight, 6) "
        "FROM linkage.links",
        "unlinked": "SELECT hdh_provider, coh_rec_id, reason FROM linkage.unlinked",
        "ambiguous": "SELECT hdh_provider, coh_rec_id, candidate_count, candidate_ben_idt_anos "
        "FROM linkage.ambiguous",
    }
    with warehouse.read_only() as connection:
        return {
            name: {tuple(map(str, row)) for row in connection.execute(query).fetchall()}
            for name, query in queries.items()
        }


@pytest.mark.timeout(1200)
def test_on_the_spark_engine_linkage_reads_the_marts_in_place_and_links_the_same(
    both_engines: BothEngines,
) -> None:
    assert both_engines.on_duckdb.success and both_engines.on_spark.success
    on_duckdb = _published(DuckDBWarehouse(both_engines.duckdb_folder / "warehouse.duckdb"))
    on_spark = _published(both_engines.spark_warehouse)
    assert on_spark == on_duckdb
    assert len(on_spark["links"]) > 100

    stats = {}
    for name, result in (("duckdb", both_engines.on_duckdb), ("spark", both_engines.on_spark)):
        (event,) = [m for m in result.get_asset_materialization_events() if m.asset_key == LINKS]
        stats[name] = {k: v.value for k, v in event.materialization.metadata.items()}
    for key in ("cohort_records", "linkage_rate", "precision", "recall", "em_iterations"):
        assert stats["spark"][key] == stats["duckdb"][key], key
    # Opted-out persons' records were set aside before linking, on Spark as on DuckDB.
    root = both_engines.spark_folder / "linkage"
    (version,) = [p.name for p in (root / "inputs").iterdir()]
    linked = LinkageRoot.from_uri(str(root)).read_summary(version)["stats"]["cohort_records"]
    with both_engines.spark_warehouse.read_only() as connection:
        (delivered,) = connection.execute("SELECT count(*) FROM staging.stg_cohort_ext").fetchone()
    assert 0 < linked < delivered

    # No DuckDB staging copy: the inputs folder records what was read, and holds no table's copy
    # (the truth table, a test table, is written by Spark for the quality figures).
    staged = sorted(p.name for p in (root / "inputs" / version).iterdir())
    assert staged == ["pinned.json", "truth"]
    assert not (both_engines.spark_folder / "unused.duckdb").exists()
    pinned = json.loads((root / "inputs" / version / "pinned.json").read_text())
    assert {t["relation"] for t in pinned["tables"]} == {
        "intermediate.int_opt_out_exclusions",
        "intermediate.int_pseudonym_persons",
        "marts.persons",
        "staging.stg_cohort_ext",
        TRUTH_TABLE,
    }
    assert all(len(t["files"]) == 2 for t in pinned["tables"])
    # The pins name what Spark read, by the warehouse's URI, with the size and last write found there.
    persons = next(t for t in pinned["tables"] if t["relation"] == "marts.persons")
    assert persons["folder"] == both_engines.spark_warehouse.relation_uri("marts.persons")
    assert all(f["uri"].startswith(persons["folder"] + "/part-") and f["size"] > 0 for f in persons["files"])
    # Written in parallel: several part files per output (Spark's shuffle partitions), none coalesced.
    assert len(list((root / "outputs").glob("*/links/part-*.parquet"))) > 1


def test_a_mart_rewritten_while_linkage_reads_it_discards_the_run(
    spark_resource: PySparkResource, both_engines: BothEngines, tmp_path: Path
) -> None:
    """dbt's insert_overwrite replaces a mart's files under a running link step: the run publishes nothing.
    The warehouse is a file:// URI, so the pins are checked through the file system object stores use."""
    shutil.copytree(both_engines.spark_warehouse.location.local, tmp_path / "spark_warehouse")
    warehouse = SparkParquetWarehouse((tmp_path / "spark_warehouse").as_uri())
    root = LinkageRoot.from_uri(str(tmp_path / "linkage"))
    staged = stage(root, warehouse)
    spark = spark_session_from_config(spark_resource.spark_config)
    persons = warehouse.relation_uri("marts.persons")
    spark.read.parquet(persons).localCheckpoint().write.mode("overwrite").parquet(persons)
    with pytest.raises(LinkageStorageError) as raised:
        link_staged(spark, root, staged, LinkageSettings(u_max_pairs=2e5))
    assert raised.value.reason == "input_changed"
    assert "marts.persons" in raised.value.message
    assert not (tmp_path / "linkage" / "inputs" / staged.version).exists()
    assert not (tmp_path / "linkage" / "outputs" / staged.version).exists()
