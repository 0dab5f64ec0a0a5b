"""Generated staging, built by real dbt on the HDH's synthetic samples of a few generated families.

The samples (``synthetic-snds/schemas/**/<TABLE>.csv``, ``nomenclatures/**``)
are read at test time, never copied, and written as raw tables the way
ingestion writes them (``tests/dbt_inputs.write_raw``). Chosen to cover every
typing rule: a per-year PMSI family keyed within its year (T_HADaaB), a DCIR
table without a key (ER_UCD_F), SNDS date formats (T_RIPaaC: ``%d%m%Y``,
date-times, months alone; NS_DTR_F: ``YYYYMM``) and a code list whose column
name has an accent (openmedic_ATC2). What each column must become is written
here from the Table Schema types, not taken from the generator.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import pytest
from dbt_inputs import query, run_dbt, write_raw

from hdh_pipelines.ingestion.partitions import DELIVERIES, delivery_partition_key
from hdh_pipelines.normalisation.assets import SNDS_STAGING_GROUP, snds_staging
from hdh_pipelines.registry import default_registry

REFERENCE = Path(__file__).resolve().parents[2] / "shared/reference/snds/synthetic-snds"
# Delivered name -> the sample of its family.
SAMPLES = {
    "T_HAD23B": "schemas/PMSI/PMSI HAD/T_HADaaB.csv",
    "ER_UCD_F": "schemas/DCIR/ER_UCD_F.csv",
    "T_RIP23C": "schemas/PMSI/PMSI RIM-P/T_RIPaaC.csv",
    "NS_DTR_F": "schemas/DCIRS/NS_DTR_F.csv",
    "openmedic_ATC2": "nomenclatures/OPENMEDIC/openmedic_ATC2.csv",
}
MODELS = {
    "T_HAD23B": "stg_t_hadaab",
    "ER_UCD_F": "stg_er_ucd_f",
    "T_RIP23C": "stg_t_ripaac",
    "NS_DTR_F": "stg_ns_dtr_f",
    "openmedic_ATC2": "stg_openmedic_atc2",
}
# Table Schema type (and format) -> the DuckDB type of the staging column.
EXPECTED_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "number": "DOUBLE",
    "year": "INTEGER",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "yearmonth": "DATE",
    "datetime": "TIMESTAMP",
}

STAGING = dg.AssetSelection.groups(SNDS_STAGING_GROUP)

pytestmark = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"synthetic-snds not found under {REFERENCE}.")


def sample_rows(path: Path) -> list[dict[str, str | None]]:
    """The sample's rows as delivered text, an empty cell None (as ingestion loads it)."""
    text = path.read_text(encoding="utf-8")
    delimiter = ";" if text.splitlines()[0].count(";") > text.splitlines()[0].count(",") else ","
    return [
        {k: (v or None) for k, v in row.items()}
        for row in csv.DictReader(text.splitlines(), delimiter=delimiter)
    ]


def distinct_keys(rows: list[Mapping[str, str | None]], key: tuple[str, ...]) -> int:
    return len({tuple((row[c] or "").strip() for c in key) for row in rows})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[dict[str, str | None]]]]:
    folder = tmp_path_factory.mktemp("generated_staging")
    raw_root, warehouse = folder / "raw", folder / "warehouse.duckdb"
    delivered = {name: sample_rows(REFERENCE / path) for name, path in SAMPLES.items()}
    for name, rows in delivered.items():
        write_raw(raw_root, name, rows, delivery_id="d1")
    # The same stays in the next year's table: a stay number holds within its year, both are kept.
    write_raw(raw_root, "T_HAD24B", delivered["T_HAD23B"], delivery_id="d1", file_name="part-1")
    # A later delivery of the code list: its version of A01 wins; a sentinel date and a near miss.
    write_raw(
        raw_root,
        "openmedic_ATC2",
        [{"ATC2": " A01 ", "Libellé ATC2": "NOUVEAU LIBELLE"}],
        delivery_id="d2",
        loaded_at=datetime(2026, 2, 1),
    )
    first = delivered["NS_DTR_F"][0]
    planted = [
        {**first, "EXE_SOI_DTD": "1600-01-01", "EXE_SOI_AMD": "160001", "BEN_RES_DPT": "001"},
        {**first, "EXE_SOI_DTD": "1600-01-02", "EXE_SOI_AMD": "160002", "BEN_RES_DPT": "02A"},
    ]
    write_raw(raw_root, "NS_DTR_F", planted, delivery_id="d2", loaded_at=datetime(2026, 2, 1))
    delivered["NS_DTR_F"] = delivered["NS_DTR_F"] + planted
    run_dbt(
        "build",
        "--select",
        " ".join(MODELS.values()),
        warehouse=warehouse,
        raw_root=raw_root,
        target=folder / "target",
        env={"HDH_DBT_GENERATED_STAGING": "on"},  # conftest leaves them out of every other dbt command
    )
    return warehouse, delivered


def test_columns_are_typed_from_the_registry(built) -> None:
    warehouse, _ = built
    registry = default_registry()
    for delivered, model in MODELS.items():
        types = dict(
            query(
                warehouse,
                "select column_name, data_type from information_schema.columns "
                "where table_schema = 'staging' and table_name = ? order by ordinal_position",
                [model],
            )
        )
        schema = registry.resolve(delivered)
        expected = {
            field.name.lower(): "INTEGER" if field.format == "%m" else EXPECTED_TYPES[field.type]
            for field in schema.fields
        }
        if delivered == "openmedic_ATC2":
            expected["libelle_atc2"] = expected.pop("libellé atc2")
        lineage = {"hdh_provider": "VARCHAR", "hdh_delivery_id": "VARCHAR", "hdh_dataset": "VARCHAR"}
        assert types == {**expected, **lineage, "hdh_loaded_at": "TIMESTAMP"}, model


def test_row_counts_follow_the_primary_key(built) -> None:
    warehouse, delivered = built
    counts = {
        model: query(warehouse, f"select count(*) from staging.{model}")[0][0] for model in MODELS.values()
    }
    had = delivered["T_HAD23B"]
    assert counts == {
        # Keyed within the year: T_HAD23B and T_HAD24B both kept.
        "stg_t_hadaab": 2 * distinct_keys(had, ("ETA_NUM_EPMSI", "RHAD_NUM")),
        # No key: every delivered row.
        "stg_er_ucd_f": len(delivered["ER_UCD_F"]),
        "stg_t_ripaac": distinct_keys(delivered["T_RIP23C"], ("ETA_NUM_EPMSI", "RIP_NUM")),
        "stg_ns_dtr_f": len(delivered["NS_DTR_F"]),
        "stg_openmedic_atc2": len(delivered["openmedic_ATC2"]),
    }


def test_values_are_typed_and_the_latest_delivery_wins(built) -> None:
    warehouse, delivered = built
    assert query(
        warehouse, "select libelle_atc2, hdh_delivery_id from staging.stg_openmedic_atc2 where atc2 = 'A01'"
    ) == [("NOUVEAU LIBELLE", "d2")]
    # The missing date (and its month) is NULL, the day after is not; zero-padded codes keep their zeros.
    assert query(
        warehouse,
        "select exe_soi_dtd, exe_soi_amd, ben_res_dpt from staging.stg_ns_dtr_f "
        "where hdh_delivery_id = 'd2' order by ben_res_dpt",
    ) == [(None, None, "001"), (date(1600, 1, 2), date(1600, 2, 1), "02A")]
    # SNDS formats: %d%m%Y dates, a month alone as its number.
    rip = delivered["T_RIP23C"][0]
    expected_entry = datetime.strptime(rip["ENT_DAT"], "%d%m%Y").date()
    assert query(
        warehouse,
        "select ent_dat, ent_moi from staging.stg_t_ripaac where eta_num_epmsi is not distinct from ? "
        "and rip_num = ?",
        [rip["ETA_NUM_EPMSI"], rip["RIP_NUM"]],
    ) == [(expected_entry, int(rip["ENT_MOI"]))]


def test_a_load_of_its_raw_table_builds_a_view_and_no_other() -> None:
    """The sensor snds_staging_automation's condition, evaluated by Dagster on a real instance."""
    assert snds_staging is not None, "the manifest was parsed with HDH_DBT_GENERATED_STAGING=off: dbt parse"
    from hdh_pipelines.definitions import defs  # the code location's, as the sensor evaluates them

    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=STAGING)
        assert first.total_requested == 0  # ~350 missing views, none built for being missing
        deliveries = [delivery_partition_key("cnam", "d1"), delivery_partition_key("cnam", "d2")]
        instance.add_dynamic_partitions(DELIVERIES.name, deliveries)
        # A delivery that did not hold ER_UCD_F leaves its partition of raw/er_ucd_f missing: no matter.
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=["raw", "er_ucd_f"], partition=deliveries[1])
        )
        loaded = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=STAGING, cursor=first.cursor
        )
        assert loaded.total_requested == 1
        assert loaded.get_num_requested(dg.AssetKey(["staging", "stg_er_ucd_f"])) == 1
        handled = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=STAGING, cursor=loaded.cursor
        )
        assert handled.total_requested == 0
