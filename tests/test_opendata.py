"""Open-science services on a small hand-built DuckDB warehouse with planted counts, and in Dagster.

Disclosure control is attacked: each suppressed value's feasible range is
computed by linear programming (scipy) from the published cells and totals;
the attack must never pin one down.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
from disclosure_attacker import plain_attack

from hdh_pipelines.core.disclosure import DISCLOSURE_THRESHOLD
from hdh_pipelines.normalisation.resources import WarehouseResource
from hdh_pipelines.normalisation.warehouse import DuckDBWarehouse
from hdh_pipelines.open_science import (
    TOTAL,
    IndicatorSpec,
    OpenDataRefused,
    export_challenge,
    protect_counts,
    publish_open_dispensations,
    read_log,
    run_indicator,
)
from hdh_pipelines.open_science.assets import (
    data_challenge,
    indicator_job,
    open_dispensations,
    synthetic_snds,
)
from hdh_pipelines.open_science.geography import DEPARTEMENT_REGION, REGION_NAMES
from hdh_pipelines.open_science.resources import OpenScienceResource

NOW = datetime(2026, 11, 29, 12, 0).astimezone()

# ---------------------------------------------------------------- disclosure control
# The attacker and the seeded random tables are in test_disclosure_attacks.py.


def assert_protected(table: pd.DataFrame, dims: list[str], measure: str) -> None:
    shown = table[measure].dropna()
    assert not ((shown > 0) & (shown < DISCLOSURE_THRESHOLD)).any(), "a small count is published"
    assert "suppression" not in table.columns, "no label says why a value is hidden"
    plain_attack(table.astype({name: str for name in dims}), dims, measure)


def test_planted_table_margins_and_single_dimension():
    cells = pd.DataFrame(
        {"sex": ["female"] * 3 + ["male"] * 3, "region": ["11", "84", "94"] * 2, "n": [50, 3, 0, 40, 20, 12]}
    )
    protected = protect_counts(cells, ["sex", "region"], "n")
    table = protected.table.set_index(["sex", "region"])
    assert pd.isna(table.loc[("female", "84"), "n"]) and protected.sensitive == 1
    assert table.loc[("female", "94"), "n"] == 0  # a zero is published
    assert table.loc[(TOTAL, TOTAL), "cell_type"] == "grand_total"
    assert protected.suppressed >= 4  # a row, a column and the cycle closing them
    assert_protected(table.reset_index(), ["sex", "region"], "n")

    one_dimension = protect_counts(pd.DataFrame({"year": ["2023", "2024"], "n": [4, 30]}), ["year"], "n")
    # With its total shown, the small cell needs a complement: both cells hidden (each in [1, 33]).
    assert list(one_dimension.table["n"].isna()) == [True, True, False]
    assert list(one_dimension.table["cell_type"]) == ["cell", "cell", "grand_total"]


def test_bad_tables_are_refused():
    with pytest.raises(OpenDataRefused) as refused:
        protect_counts(pd.DataFrame({"a": ["x", "y"], "b": ["1", "2"], "n": [1, 2]}), ["a", "b"], "n")
    assert refused.value.reason == "incomplete_grid"
    with pytest.raises(OpenDataRefused) as refused:
        protect_counts(pd.DataFrame({"a": ["x"], "n": [-1]}), ["a"], "n")
    assert refused.value.reason == "invalid_table"


# ---------------------------------------------------------------- the warehouse

# (persons, sex, birth year, département): planted groups.
PLANTED = [
    (25, "2", 1950, "075"),  # 2024: female, 74, Île-de-France
    (14, "1", 1970, "069"),  # male, 54, Auvergne-Rhône-Alpes
    (3, "1", 1970, "02A"),  # male, 54, Corse: a small cell
    (12, "2", 1990, "971"),  # female, 34, Guadeloupe
    (2, "2", 1990, "099"),  # residence abroad: 'unknown'
]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb"
    persons = []
    for size, sex, birth_year, departement in PLANTED:
        persons += [(sex, birth_year, departement)] * size
    frame = pd.DataFrame(persons, columns=["sex_code", "birth_year", "residence_departement"])
    frame.insert(0, "ben_idt_ano", [f"P{i:05d}" for i in range(len(frame))])
    with duckdb.connect(str(path)) as connection:
        connection.register("planted", frame)
        connection.execute("create schema marts; create schema algorithms")
        connection.execute(
            """
            create table marts.persons as
            select ben_idt_ano, sex_code::varchar as sex_code, birth_year, 6 as birth_month,
                   null::date as death_date, residence_departement,
                   '001' as residence_commune, 1 as pseudonym_count
            from planted
            """
        )
        # Every person treated for diabetes in 2024; the first 20 also in 2023.
        connection.execute(
            """
            create table algorithms.alg_treated_diabetes as
            select ben_idt_ano, y as year, make_date(y, 1, 15) as first_evidence_date, 3 as evidence_count,
                   '1.0.0' as algorithm_version
            from marts.persons, (values (2023), (2024)) v(y)
            where y = 2024 or ben_idt_ano < 'P00020'
            """
        )
        # Two A10 dispensations and one C10 per person in 2024, plus an information-only line (not counted).
        connection.execute(
            """
            create table marts.drug_dispensations as
            select ben_idt_ano, date '2024-03-01' + cast(n * 30 as integer) as dispensing_date,
                   '3400930000000' as cip13,
                   case when n = 2 then 'C10AA05' else 'A10BA02' end as atc_code,
                   1 as boxes, 5.0 as unit_price,
                   3313 as benefit_nature_code, false as is_for_information_only
            from marts.persons, range(3) r(n)
            union all
            select ben_idt_ano, date '2024-06-01', '3400930000001', 'N02BE01', 1, 2.0, 3313, true
            from marts.persons
            """
        )
        # One I21 stay per male person in 2024 and one error stay (not counted).
        connection.execute(
            """
            create table marts.hospital_stays as
            select 2024 as pmsi_year, '750000001' as eta_num, row_number() over () as rsa_num, ben_idt_ano,
                   'N' || ben_idt_ano as nir_ano_17, date '2024-05-02' as stay_start_date,
                   4 as length_of_stay_days,
                   sex_code, 2024 - birth_year as age_years, null::integer as age_days, residence_departement,
                   'I214' as principal_diagnosis, null::varchar as related_diagnosis,
                   0 as associated_diagnosis_count, '05M041' as ghm_code, '8' as admission_mode,
                   '5' as admission_origin, '8' as discharge_mode, 1 as procedure_count, 0 as session_count,
                   ben_idt_ano = 'P00030' as is_error_stay
            from marts.persons where sex_code = '1'
            """
        )
    add_empty_opt_out_registry(path)
    return path


def add_empty_opt_out_registry(path: Path) -> None:
    """The opt-out models a challenge export applies (nobody opted out), with dbt's columns."""
    with duckdb.connect(str(path)) as connection:
        connection.execute(
            """
            create schema if not exists staging; create schema if not exists intermediate;
            create table staging.stg_opt_out (ben_nir_psa varchar, ben_rng_gem integer, opt_out_dte date,
                opt_end_dte date, opt_scope varchar, opt_status varchar, hdh_provider varchar,
                hdh_delivery_id varchar, hdh_loaded_at timestamp);
            create table intermediate.int_opt_out_exclusions (ben_nir_psa varchar, ben_rng_gem integer,
                ben_idt_ano varchar);
            """
        )


def spec(**overrides) -> IndicatorSpec:
    values = dict(
        name="diabetes",
        unit="patients",
        algorithm="alg_treated_diabetes",
        breakdown=("year", "sex", "age_band", "region"),
        year_from=2023,
        year_to=2024,
    )
    return IndicatorSpec(**{**values, **overrides})


def _run(warehouse: Path, root: Path, request: IndicatorSpec):
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        return run_indicator(
            connection,
            DuckDBWarehouse(warehouse),
            request,
            root / "indicators",
            root / "log" / "requests.jsonl",
            request_id="r1",
            requester="tester",
            now=NOW,
        )


def test_indicator_counts_planted_patients_and_is_protected(warehouse, tmp_path):
    result = _run(warehouse, tmp_path, spec())
    csv = pd.read_csv(result.folder / "diabetes.csv", dtype={"year": str, "region": str})
    cells = csv.set_index(["year", "sex", "age_band", "region"])
    assert cells.loc[("2024", "female", "65-79", "11"), "count"] == 25
    assert cells.loc[("2023", "female", "65-79", "11"), "count"] == 20
    # 14 men in 84 beside 3 in 94: the 14 is the cheapest complement of the 3 in their row.
    assert pd.isna(cells.loc[("2024", "male", "40-64", "84"), "count"])
    assert pd.isna(cells.loc[("2024", "male", "40-64", "94"), "count"])
    assert pd.isna(cells.loc[("2024", "female", "18-39", "unknown"), "count"])
    assert cells.loc[("2024", "female", "65-79", "93"), "count"] == 0
    assert set(csv["region"]) == {*REGION_NAMES, "unknown", TOTAL}
    assert_protected(csv, ["year", "sex", "age_band", "region"], "count")

    document = json.loads((result.folder / "diabetes.json").read_text())
    metadata = document["metadata"]
    assert metadata["definition"]["algorithm"] == "alg_treated_diabetes"
    assert metadata["data_versions"]["algorithm_versions"] == {"algorithms.alg_treated_diabetes": ["1.0.0"]}
    assert metadata["suppression"]["threshold"] == 11 and metadata["suppression"]["suppressed_values"] > 0
    assert "primary" not in json.dumps(document) and "suppression" not in csv.columns
    assert metadata["computed_at"].startswith("2026-11-29")

    (record,) = read_log(tmp_path / "log" / "requests.jsonl")
    assert record["outcome"] == "published" and record["requester"] == "tester"
    logged = [row["count"] for row in record["result"] if row["count"] is not None]
    assert logged and not any(0 < value < 11 for value in logged)
    assert stat.S_IMODE((tmp_path / "log" / "requests.jsonl").stat().st_mode) == 0o600

    _run(warehouse, tmp_path, spec())  # a re-run replaces the output and logs once more
    assert len(read_log(tmp_path / "log" / "requests.jsonl")) == 2
    assert [p.name for p in (tmp_path / "indicators").iterdir()] == ["diabetes"]


def test_indicator_code_lists_and_stays(warehouse, tmp_path):
    drugs = _run(
        warehouse, tmp_path, spec(name="a10", algorithm=None, atc_prefixes=("A10",), breakdown=("year",))
    )
    assert drugs.protected.table.set_index("year").loc["2024", "count"] == 56  # every person, once
    stays = _run(
        warehouse,
        tmp_path,
        spec(
            name="acs",
            unit="stays",
            algorithm=None,
            icd10_prefixes=("I21",),
            breakdown=("year", "sex", "departement"),
        ),
    )
    table = stays.protected.table.set_index(["year", "sex", "departement"])
    assert table.loc[(TOTAL, TOTAL, TOTAL), "count"] == 16  # 17 stays of men, one an error stay
    assert pd.isna(table.loc[("2024", "male", "2A"), "count"])
    assert table.loc[("2024", "female", "69"), "count"] == 0
    assert_protected(stays.protected.table, ["year", "sex", "departement"], "count")
    assert set(stays.protected.table["departement"]) >= set(DEPARTEMENT_REGION)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"algorithm": "alg_unknown"}, "unknown_algorithm"),
        ({"unit": "stays", "algorithm": None, "atc_prefixes": ("A10",)}, "unsupported_combination"),
        ({"threshold": 5}, "invalid_threshold"),
        ({"breakdown": ("region", "departement")}, "invalid_breakdown"),
        ({"breakdown": ("sex", "year")}, "invalid_breakdown"),
        ({"age_bands": (0, 80)}, "invalid_age_bands"),
        ({"atc_prefixes": ("A10'; drop table x; --",), "algorithm": None}, "invalid_code"),
    ],
)
def test_bad_requests_are_refused_and_logged(warehouse, tmp_path, overrides, reason):
    with pytest.raises(OpenDataRefused) as refused:
        _run(warehouse, tmp_path, spec(**overrides))
    assert refused.value.reason == reason
    (record,) = read_log(tmp_path / "log" / "requests.jsonl")
    assert record["outcome"] == "refused" and record["reason"] == reason
    assert not (tmp_path / "indicators" / "diabetes").exists()


# ---------------------------------------------------------------- open data and challenge


def test_open_dispensations_published_with_open_licence(warehouse, tmp_path):
    on_duckdb = DuckDBWarehouse(warehouse)
    with on_duckdb.read_only() as connection:
        protected, folder, _ = publish_open_dispensations(connection, on_duckdb, tmp_path / "public", now=NOW)
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["license"]["identifier"] == "etalab-2.0"
    parquet = pd.read_parquet(folder / "dispensations_atc_year_region.parquet")
    csv = pd.read_csv(folder / "dispensations_atc_year_region.csv", dtype={"year": str, "region": str})
    assert len(parquet) == len(csv) == len(protected.table)
    cells = csv.set_index(["atc_class", "year", "region"])
    # Every person has A10 and C10: the two rows are equal, so nearly everything is hidden.
    assert cells.loc[(TOTAL, TOTAL, "11"), "patients"] == 50
    assert cells.loc[(TOTAL, TOTAL, "11"), "dispensations"] == 75
    assert "N02" not in set(csv["atc_class"])  # information-only lines are not consumption
    assert_protected(csv, ["atc_class", "year", "region"], "patients")
    assert_protected(csv, ["atc_class", "year", "region"], "boxes")


# A fixed challenge key: the side each person falls on is a draw from the key, and with the fixture's few
# persons a random key leaves the test set empty a few times in a hundred (refused, below).
CHALLENGE_KEY = bytes(range(32))


def test_data_challenge_export(warehouse, tmp_path):
    key = CHALLENGE_KEY
    export = export_challenge(
        DuckDBWarehouse(warehouse),
        "hospital_stays",
        key,
        tmp_path / "challenges",
        "acs-2026",
        test_fraction=0.3,
        now=NOW,
        mart_descriptions={"ghm_code": "GHM."},
    )
    train = pd.read_parquet(export.folder / "train.parquet")
    test = pd.read_parquet(export.folder / "test.parquet")
    assert len(train) + len(test) == 17 and len(test) > 0 and len(train) > 0
    assert not set(train["person_id"]) & set(test["person_id"])  # split by person
    expected = hmac.new(key, b"person\x1fP00025", hashlib.sha256).hexdigest()
    assert expected in set(train["person_id"]) | set(test["person_id"])
    assert {"ben_idt_ano", "eta_num", "rsa_num", "nir_ano_17", "stay_start_date"}.isdisjoint(train.columns)
    assert (pd.to_datetime(train["stay_start_month"]).dt.day == 1).all()
    columns = json.loads((export.folder / "columns.json").read_text())
    assert columns["ghm_code"] == "GHM." and set(columns) == set(train.columns)
    assert stat.S_IMODE(export.folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in export.folder.iterdir())
    again = export_challenge(
        DuckDBWarehouse(warehouse),
        "hospital_stays",
        key,
        tmp_path / "challenges",
        "acs-2026",
        test_fraction=0.3,
        now=NOW,
        mart_descriptions={},
    )
    assert pd.read_parquet(again.folder / "test.parquet").equals(test)  # same key, same split


def test_a_split_with_an_empty_side_is_refused_and_publishes_nothing(warehouse, tmp_path):
    with pytest.raises(OpenDataRefused) as refused:
        export_challenge(
            DuckDBWarehouse(warehouse),
            "hospital_stays",
            CHALLENGE_KEY,
            tmp_path / "challenges",
            "acs-2026",
            test_fraction=1e-9,
            now=NOW,
            mart_descriptions={},
        )
    assert refused.value.reason == "empty_split"
    assert "test set empty" in str(refused.value)
    assert not list((tmp_path / "challenges").iterdir())


# ---------------------------------------------------------------- Dagster


def _resources(warehouse: Path, root: Path, key: str | None = None) -> dict:
    return {
        "warehouse": WarehouseResource(path=str(warehouse)),
        "open_science": OpenScienceResource(
            indicator_root=str(root / "indicators"),
            request_log=str(root / "log" / "requests.jsonl"),
            public_root=str(root / "public"),
            challenge_root=str(root / "challenges"),
            challenge_key=key,
        ),
    }


LAUNCHPAD_EXAMPLE = {
    "ops": {
        "compute_indicator": {
            "config": {
                "name": "treated-diabetes-2024",
                "unit": "patients",
                "algorithm": "alg_treated_diabetes",
                "breakdown": ["year", "sex", "age_band", "region"],
                "year_from": 2024,
                "year_to": 2024,
            }
        }
    }
}


def test_dagster_indicator_job_and_assets(warehouse, tmp_path):
    with dg.instance_for_test() as instance:
        result = indicator_job.execute_in_process(
            run_config=LAUNCHPAD_EXAMPLE, resources=_resources(warehouse, tmp_path), instance=instance
        )
        assert result.success
        (materialisation,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
        metadata = materialisation.event_specific_data.metadata
        assert metadata["suppressed_values"].value > 0
        assert "[suppressed]" in metadata["table"].value
        folder = tmp_path / "indicators" / "treated-diabetes-2024" / result.run_id  # one folder per request
        assert (folder / "treated-diabetes-2024.csv").exists()

        bad = json.loads(json.dumps(LAUNCHPAD_EXAMPLE))
        bad["ops"]["compute_indicator"]["config"]["algorithm"] = "alg_unknown"
        failed = indicator_job.execute_in_process(
            run_config=bad, resources=_resources(warehouse, tmp_path), instance=instance, raise_on_error=False
        )
        assert not failed.success
        failure = failed.failure_data_for_node("compute_indicator").error
        assert "unknown_algorithm" in failure.message

        assets = dg.materialize(
            [open_dispensations, data_challenge],
            resources=_resources(warehouse, tmp_path, key=CHALLENGE_KEY.hex()),
            instance=instance,
        )
        assert assets.success
        published = assets.asset_materializations_for_node("open_science__open_dispensations")[0].metadata
        assert published["licence"].value == "etalab-2.0"
        assert (tmp_path / "public" / "dispensations_atc_year_region" / "metadata.json").exists()
        assert (tmp_path / "challenges" / "hdh-challenge" / "train.parquet").exists()

        no_key = dg.materialize(
            [data_challenge],
            resources=_resources(warehouse, tmp_path),
            instance=instance,
            raise_on_error=False,
        )
        assert not no_key.success


def test_synthetic_snds_asset_is_seeded_and_published_whole(tmp_path):
    resources = {
        "open_science": OpenScienceResource(
            indicator_root=str(tmp_path / "indicators"),
            request_log=str(tmp_path / "log.jsonl"),
            public_root=str(tmp_path / "public"),
            challenge_root=str(tmp_path / "challenges"),
        )
    }
    config = {"ops": {"open_science__synthetic_snds": {"config": {"persons": 200, "seed": 3}}}}
    folders = []
    with dg.instance_for_test() as instance:
        for _ in range(2):
            result = dg.materialize(
                [synthetic_snds], resources=resources, run_config=config, instance=instance
            )
            metadata = result.asset_materializations_for_node("open_science__synthetic_snds")[0].metadata
            folder = Path(metadata["folder"].value)
            folders.append({p.name: p.read_bytes() for p in sorted(folder.iterdir())})
    assert folders[0] == folders[1], "same seed, same bytes; a re-run replaces the folder whole"
    assert {"IR_BEN_R.csv", "ER_PRS_F.csv", "ER_PHA_F.csv", "COHORT_EXT.csv"} <= set(folders[0])
    assert metadata["rows_by_dataset"].value["IR_BEN_R"] >= 200
    assert not [p for p in (tmp_path / "public" / "synthetic-snds").iterdir() if p.name.startswith(".")]
