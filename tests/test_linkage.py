"""Linkage library: generator, harmonisation, and the linkage (Splink on a real local Spark session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster_pyspark.resources import spark_session_from_config
from pyspark.sql import SparkSession

from hdh_devtools.linkage_testdata import (
    TRUTH_TABLE,
    LinkageTestSpec,
    published_rows,
    write_linkage_test_data,
)
from hdh_pipelines.core.storage_location import UnsupportedLocation
from hdh_pipelines.linkage.comparison import COHORT_COLUMNS, PERSON_COLUMNS
from hdh_pipelines.linkage.engine import LinkageSettings
from hdh_pipelines.linkage.pipeline import LinkageRun, run_linkage
from hdh_pipelines.linkage.storage import LinkageRoot, LinkageStorageError
from hdh_pipelines.normalisation.warehouse import DuckDBWarehouse, SparkParquetWarehouse, open_warehouse


@pytest.fixture(scope="module")
def spark(linkage_spark_config: dict[str, Any]) -> Iterator[SparkSession]:
    """One small local session for the module, configured as the asset's resource configures it."""
    session = spark_session_from_config(linkage_spark_config)
    session.sparkContext.setLogLevel("ERROR")
    yield session


# Small data: a smaller u sample than production's keeps each run to a few Spark jobs' worth.
SETTINGS = LinkageSettings(u_max_pairs=2e5)


def _warehouse(folder: Path, spec: LinkageTestSpec) -> DuckDBWarehouse:
    warehouse = DuckDBWarehouse(folder / "warehouse.duckdb")
    with duckdb.connect(str(warehouse.path)) as connection:
        write_linkage_test_data(connection, spec)
    return warehouse


def _link(
    spark: SparkSession, folder: Path, spec: LinkageTestSpec
) -> tuple[LinkageRun, DuckDBWarehouse, LinkageRoot]:
    warehouse = _warehouse(folder, spec)
    root = LinkageRoot.from_uri(str(folder / "linkage"))
    return run_linkage(spark, root, warehouse, SETTINGS, truth_table=TRUTH_TABLE), warehouse, root


# --- pure parts ---------------------------------------------------------------------------------------


def test_generator_plants_errors_at_the_requested_rate() -> None:
    spec = LinkageTestSpec(persons=20_000, cohort=4_000, error_rate=0.1, seed=3)
    with duckdb.connect() as connection:
        write_linkage_test_data(connection, spec)
        missing, sex_flipped, persons, truth_null = connection.execute(
            f"""
            SELECT avg((c.ben_nir_psa IS NULL)::INT),
                   avg((c.sex_cod <> p.sex_code)::INT) FILTER (WHERE p.ben_idt_ano IS NOT NULL),
                   (SELECT count(*) FROM marts.persons),
                   avg((t.true_ben_idt_ano IS NULL)::INT)
            FROM staging.stg_cohort_ext c
            JOIN {TRUTH_TABLE} t USING (hdh_provider, coh_rec_id)
            LEFT JOIN marts.persons p ON p.ben_idt_ano = t.true_ben_idt_ano
            """
        ).fetchall()[0]
    assert 0.08 < missing < 0.14  # missing at 10 %, plus half of the 2 % outsiders
    assert 0.07 < sex_flipped < 0.13
    assert 19_900 < persons < 20_000  # opted-out persons are not in marts.persons
    assert 0.015 < truth_null < 0.03


def test_residence_is_harmonised_to_insee_codes(spark: SparkSession) -> None:
    persons = spark.createDataFrame(
        [("a", "075", "056"), ("b", "02A", "004"), ("c", "971", "101"), ("d", "097", "101")],
        "ben_idt_ano string, residence_departement string, residence_commune string",
    ).selectExpr(
        "*", "1 as sex_code", "1950 as birth_year", "1 as birth_month", "cast(null as date) as death_date"
    )
    harmonised = persons.selectExpr(PERSON_COLUMNS["dpt"], PERSON_COLUMNS["commune"]).collect()
    assert [tuple(row) for row in harmonised] == [
        ("75", "75056"),
        ("2A", "2A004"),
        ("971", "97101"),
        ("971", "97101"),
    ]
    cohort = spark.createDataFrame([("5", "05001"), ("2a", "2a004")], "res_dpt string, res_com string")
    assert [
        tuple(r) for r in cohort.selectExpr(COHORT_COLUMNS["dpt"], COHORT_COLUMNS["commune"]).collect()
    ] == [("05", "05001"), ("2A", "2A004")]


def test_linkage_roots_parse_local_and_object_store_uris(tmp_path: Path) -> None:
    """Spark and DuckDB names of a root's files; nothing is contacted when a root is parsed."""
    local = LinkageRoot.from_uri(str(tmp_path / "linkage"))
    assert local.local == tmp_path / "linkage" and local.uri == (tmp_path / "linkage").as_uri()
    assert LinkageRoot.from_uri((tmp_path / "linkage").as_uri()) == local
    assert local.spark_uri("outputs", "v1", "links") == f"{(tmp_path / 'linkage').as_uri()}/outputs/v1/links"
    assert local.duckdb_uri("outputs", "v1", "links") == str(
        tmp_path / "linkage" / "outputs" / "v1" / "links"
    )

    s3 = LinkageRoot.from_uri("s3a://hub-bucket/private/linkage/")
    assert (s3.uri, s3.local) == ("s3a://hub-bucket/private/linkage", None)
    assert (
        s3.spark_uri("inputs", "v1", "cohort.parquet")
        == "s3a://hub-bucket/private/linkage/inputs/v1/cohort.parquet"
    )
    assert s3.duckdb_uri("outputs", "v1", "links", "*.parquet") == (
        "s3://hub-bucket/private/linkage/outputs/v1/links/*.parquet"
    )
    adls = "abfss://linkage@hubaccount.dfs.core.windows.net/runs"
    azure = LinkageRoot.from_uri(adls)
    assert (azure.uri, azure.local) == (adls, None)
    assert azure.spark_uri("CURRENT") == azure.duckdb_uri("CURRENT") == f"{adls}/CURRENT"

    for refused in (
        "s3://hub-bucket/linkage",  # Spark's connector is s3a://
        "gs://hub-bucket/linkage",
        "s3a://hub-bucket",  # no prefix: the root would be the whole bucket
        "s3a:///linkage",  # no bucket
        "abfss://linkage/runs",  # no account
        "abfss://linkage@hubaccount.blob.core.windows.net/runs",  # the blob endpoint, not ADLS Gen2
        "s3a://hub-bucket/linkage?versionId=1",
    ):
        with pytest.raises(LinkageStorageError) as raised:
            LinkageRoot.from_uri(refused)
        assert raised.value.reason == "unsupported_root", refused


def _write_spark_table(folder: Path, relation: str, files: dict[str, int]) -> None:
    """A table laid out as Spark writes it: ``<schema>.db/<table>/<relative path>`` Parquet files (``rows``
    rows each), written by pyarrow (no Spark session needed to test the file handling)."""
    schema, table = relation.split(".")
    for relative, rows in files.items():
        path = folder / f"{schema}.db" / table / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"n": list(range(rows))}), path)


def test_a_spark_warehouse_given_as_a_path_or_a_file_uri_pins_the_same_files(tmp_path: Path) -> None:
    """Pins, change detection, ``exists`` and ``state`` go through ``pyarrow.fs`` whatever the location: a
    path and a ``file://`` URI take that code here. s3a:// and abfss:// take it too, but cannot run here (no
    S3 or ADLS server; not mocked): for them only what is named without contacting the store is checked."""
    folder = tmp_path / "spark_warehouse"
    _write_spark_table(folder, "marts.persons", {"part-00000.parquet": 3, "part-00001.parquet": 2})
    _write_spark_table(folder, "marts.claims", {"month=2024-01/part-00000.parquet": 1})
    # Spark's own files and a write in progress are not data.
    _write_spark_table(folder, "marts.claims", {"_temporary/0/part-00009.parquet": 1, ".part.parquet": 1})
    (folder / "marts.db" / "persons" / "_SUCCESS").touch()
    by_path, by_uri = SparkParquetWarehouse(str(folder)), SparkParquetWarehouse(folder.as_uri())

    assert by_path.location == by_uri.location
    assert by_uri.relations() == ["marts.claims", "marts.persons"] and by_uri.exists()
    assert by_uri.state() == by_path.state() and by_uri.state().name == "spark_warehouse"
    claims = by_uri.pin("marts.claims")
    assert claims == by_path.pin("marts.claims")
    assert claims.folder == f"{folder.as_uri()}/marts.db/claims"
    assert [f.uri for f in claims.files] == [f"{claims.folder}/month=2024-01/part-00000.parquet"]
    persons = by_uri.pin("marts.persons")
    found = (folder / "marts.db" / "persons" / "part-00000.parquet").stat()
    assert (persons.files[0].size, persons.files[0].modified_ns) == (found.st_size, found.st_mtime_ns)
    assert by_uri.pin("marts.absent").files == ()

    # A file added since is not read, so harmless; one rewritten or removed is a change.
    _write_spark_table(folder, "marts.persons", {"part-00002.parquet": 1})
    assert not persons.changed()
    _write_spark_table(folder, "marts.persons", {"part-00001.parquet": 20})
    assert persons.changed() and not claims.changed()
    (folder / "marts.db" / "claims" / "month=2024-01" / "part-00000.parquet").unlink()
    assert claims.changed()

    s3 = SparkParquetWarehouse("s3a://hub-bucket/warehouse/")
    assert s3.relation_uri("marts.persons") == "s3a://hub-bucket/warehouse/marts.db/persons"
    assert s3.location.duckdb_uri("marts.db") == "s3://hub-bucket/warehouse/marts.db"
    adls = "abfss://hub@hubaccount.dfs.core.windows.net/warehouse"
    assert SparkParquetWarehouse(adls).relation_uri("marts.persons") == f"{adls}/marts.db/persons"
    # The DuckDB readers (workspaces, open data) need a local or mounted folder: refused, not half-read.
    with pytest.raises(UnsupportedLocation), s3.read_only():
        pass
    with duckdb.connect() as connection, pytest.raises(UnsupportedLocation):
        s3.attach(connection, "warehouse")
    with pytest.raises(ValueError, match="HDH_SPARK_WAREHOUSE_DIR"):
        open_warehouse("spark", tmp_path / "unused.duckdb", "s3://hub-bucket/warehouse")


def test_pinning_a_spark_warehouse_without_the_inputs_fails_with_a_reason(tmp_path: Path) -> None:
    """On the Spark engine staging reads only the file system: a table without data files is missing."""
    folder = tmp_path / "spark_warehouse"
    root = LinkageRoot.from_uri(str(tmp_path / "linkage"))
    with pytest.raises(LinkageStorageError) as raised:
        root.pin_inputs(SparkParquetWarehouse(folder.as_uri()), "v1")
    assert raised.value.reason == "opt_out_registry_missing"
    _write_spark_table(folder, "intermediate.int_opt_out_exclusions", {"part-00000.parquet": 1})
    _write_spark_table(folder, "marts.persons", {"part-00000.parquet": 1})
    with pytest.raises(LinkageStorageError) as raised:
        root.pin_inputs(SparkParquetWarehouse(folder.as_uri()), "v1")
    assert raised.value.reason == "missing_input"
    assert "staging.stg_cohort_ext" in raised.value.message and "marts.persons" not in raised.value.message
    assert not (tmp_path / "linkage" / "inputs").exists()


# --- the linkage on Spark ----------------------------------------------------------------------------


def test_zero_errors_link_every_record_correctly(spark: SparkSession, tmp_path: Path) -> None:
    spec = LinkageTestSpec(
        persons=5_000,
        cohort=1_000,
        error_rate=0.0,
        no_match_rate=0.0,
        twin_rate=0.0,
        opt_out_rate=0.0,
        seed=7,
    )
    run, _, _ = _link(spark, tmp_path, spec)
    assert run.quality is not None
    assert run.quality["correct_links"] == run.quality["links"] == 1_000
    assert run.stats["ambiguous_records"] == run.stats["unlinked_records"] == 0


def test_twins_sharing_a_pseudonym_stay_ambiguous(spark: SparkSession, tmp_path: Path) -> None:
    """Same-sex twins share BEN_NIR_PSA and every quasi-identifier: neither may be linked."""
    spec = LinkageTestSpec(
        persons=2_000,
        cohort=1_500,
        error_rate=0.0,
        no_match_rate=0.0,
        twin_rate=0.05,
        opt_out_rate=0.0,
        seed=11,
    )
    run, warehouse, _ = _link(spark, tmp_path, spec)
    assert run.quality is not None and run.quality["precision"] >= 0.995
    with warehouse.read_only() as connection:
        ambiguous = connection.execute(
            "SELECT count(*), min(candidate_count) FROM linkage.ambiguous"
        ).fetchall()[0]
    assert ambiguous[0] > 0 and ambiguous[1] == 2


def test_missing_inputs_fail_clearly_and_publish_nothing(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "empty.duckdb")
    duckdb.connect(str(warehouse.path)).close()
    root = LinkageRoot.from_uri(str(tmp_path / "linkage"))
    with pytest.raises(LinkageStorageError) as raised:
        root.stage_inputs(warehouse, "v1")
    # The opt-out registry is read first: nothing is staged before opted-out persons can be set aside.
    assert raised.value.reason == "opt_out_registry_missing"
    with duckdb.connect(str(warehouse.path)) as connection:
        connection.execute(
            "create schema intermediate; create schema staging; "
            "create table intermediate.int_opt_out_exclusions "
            "(ben_nir_psa varchar, ben_rng_gem varchar, ben_idt_ano varchar); "
            "create table staging.stg_opt_out (ben_nir_psa varchar, ben_rng_gem varchar, "
            "opt_out_dte date, hdh_delivery_id varchar, hdh_loaded_at timestamp)"
        )
    with pytest.raises(LinkageStorageError) as raised:
        root.stage_inputs(warehouse, "v1")
    assert raised.value.reason == "missing_input"
    assert root.local is not None and not (root.local / "inputs" / "v1").exists()


def _empty_like(warehouse: DuckDBWarehouse, table: str, where: str) -> None:
    with duckdb.connect(str(warehouse.path)) as connection:
        connection.execute(f"DELETE FROM {table} WHERE {where}")


@pytest.mark.parametrize(
    ("table", "where", "expected_unlinked"),
    [
        ("staging.stg_cohort_ext", "true", 0),  # no cohort record
        ("marts.persons", "true", 40),  # nobody to link to
        # No pseudonym and no blocking rule's equality: no pair survives blocking.
        ("marts.persons", "birth_year < 3000", 40),
    ],
    ids=["empty_cohort", "no_persons", "no_pairs"],
)
def test_empty_inputs_publish_empty_outputs(
    spark: SparkSession, tmp_path: Path, table: str, where: str, expected_unlinked: int
) -> None:
    spec = LinkageTestSpec(
        persons=200, cohort=40, error_rate=0.0, no_match_rate=0.0, opt_out_rate=0.0, seed=8
    )
    warehouse = _warehouse(tmp_path, spec)
    if where != "true":
        # Persons nobody can be blocked with: another century, no sex, no residence, no pseudonym.
        with duckdb.connect(str(warehouse.path)) as connection:
            connection.execute(
                "UPDATE marts.persons SET birth_year = birth_year - 300, birth_month = NULL, sex_code = 0, "
                "residence_departement = NULL, residence_commune = NULL; "
                "DELETE FROM intermediate.int_pseudonym_persons"
            )
    else:
        _empty_like(warehouse, table, where)
    root = LinkageRoot.from_uri(str(tmp_path / "linkage"))
    run = run_linkage(spark, root, warehouse, SETTINGS)
    assert run.stats["deterministic_links"] == run.stats["probabilistic_links"] == 0
    assert run.stats["unlinked_records"] == expected_unlinked
    rows = published_rows(warehouse.path)
    assert rows["links"] == rows["ambiguous"] == []
    assert len(rows["unlinked"]) == expected_unlinked
    assert {row[2] for row in rows["unlinked"]} <= {"no_candidate"}
