"""Attacks on disclosure control: a reader who holds every published table of a population tries to pin
down hidden values.

The attacker (tests/disclosure_attacker.py) is written independently of ``open_science.disclosure``: it
reads the published tables only, knows the threshold, that zeros are published
(so a hidden value is at least 1), that counts are integers, that totals are
sums, how régions group départements and how age bands nest, and it combines
every table and request of the same population into one integer program
(``scipy.optimize.milp``). No hidden value may come out narrower than the
protection width, on seeded random tables and on the platform's real outputs
(indicator job, open dispensations).
"""

from __future__ import annotations

import itertools
import json
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
from disclosure_attacker import assert_resists, by_name, plain_attack

from hdh_pipelines.catalogue.model import DatasetDescription, Layer, Variable
from hdh_pipelines.catalogue.statistics import warehouse_statistics
from hdh_pipelines.core.disclosure import DISCLOSURE_THRESHOLD
from hdh_pipelines.normalisation.resources import WarehouseResource
from hdh_pipelines.normalisation.warehouse import DuckDBWarehouse
from hdh_pipelines.open_science import (
    TOTAL,
    IndicatorSpec,
    OpenDataRefused,
    protect_counts,
    read_log,
    run_indicator,
)
from hdh_pipelines.open_science.assets import indicator_job, open_dispensations
from hdh_pipelines.open_science.geography import DEPARTEMENT_REGION, REGION_NAMES
from hdh_pipelines.open_science.resources import OpenScienceResource

NOW = datetime(2026, 12, 1, 12, 0).astimezone()

# ---------------------------------------------------------------- seeded random tables


def test_seeded_random_tables_resist():
    generator = np.random.default_rng(13)
    values = [0, 0, 1, 1, 1, 2, 5, 10, 11, 12, 30, 400]
    for _ in range(25):
        domains = {
            "year": ["2023", "2024", "2025"][: generator.integers(1, 4)],
            "sex": ["female", "male", "unknown"][: generator.integers(1, 4)],
            "region": list(REGION_NAMES)[: generator.integers(1, 7)],
        }
        dims = list(domains)[3 - generator.integers(1, 4) :]
        cells = pd.DataFrame(
            [
                dict(zip(dims, combo, strict=True), n=int(generator.choice(values)))
                for combo in itertools.product(*(domains[d] for d in dims))
            ]
        )
        try:
            protected = protect_counts(cells, dims, "n")
        except OpenDataRefused as refusal:
            assert refusal.reason == "unprotectable_table"
            continue
        table = protected.table
        shown = table["n"].dropna()
        assert not ((shown > 0) & (shown < DISCLOSURE_THRESHOLD)).any(), "a small count is published"
        merged = table.merge(cells, on=dims, suffixes=("", "_true"))
        assert (merged.loc[merged["n_true"] == 0, "n"] == 0).all(), "zeros are published"
        plain_attack(table, dims, "n")


def test_a_table_of_ones_is_not_recovered():
    """The review's stays table: every hidden cell was exactly 1 given the published totals."""
    departements = ["75", "77", "78", "91", "92", "93", "94", "95", "18", "28", "36", "37", "41", "45", "21"]
    cells = pd.DataFrame(
        [{"sex": sex, "departement": d, "n": 1} for sex in ("female", "male") for d in departements]
    )
    protected = protect_counts(cells, ["sex", "departement"], "n")
    plain_attack(protected.table, ["sex", "departement"], "n")


# ---------------------------------------------------------------- the platform's outputs

DEPARTEMENTS = ["075", "077", "092", "069", "038", "063", "02A", "02B", "971", "099"]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    """A seeded population over a few départements of four régions, with small groups everywhere,
    a child with 12 stays and a cell dominated by one patient's stays."""
    generator = np.random.default_rng(7)
    size = 700
    persons = pd.DataFrame(
        {
            "ben_idt_ano": [f"Q{i:05d}" for i in range(size)],
            "sex_code": generator.choice(["1", "2"], size, p=[0.5, 0.5]),
            "birth_year": generator.choice([1940, 1950, 1962, 1975, 1990, 2010, 2020], size),
            "residence_departement": generator.choice(
                DEPARTEMENTS, size, p=[0.3, 0.15, 0.15, 0.15, 0.08, 0.06, 0.04, 0.03, 0.02, 0.02]
            ),
        }
    )
    # The child's sex is unknown: alone in its cells, with 12 stays.
    persons.loc[0, ["sex_code", "birth_year", "residence_departement"]] = ["0", 2018, "063"]
    path = tmp_path_factory.mktemp("attack-warehouse") / "warehouse.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.register("people", persons)
        connection.execute("create schema marts; create schema algorithms")
        connection.execute(
            """
            create table marts.persons as
            select ben_idt_ano, sex_code, birth_year, 6 as birth_month, null::date as death_date,
                   residence_departement, '001' as residence_commune, 1 as pseudonym_count
            from people
            """
        )
        connection.execute(
            """
            create table algorithms.alg_treated_diabetes as
            select ben_idt_ano, y as year, make_date(y, 1, 15) as first_evidence_date, 3 as evidence_count,
                   '1.0.0' as algorithm_version
            from marts.persons, (values (2023), (2024)) v(y)
            where hash(ben_idt_ano || y::varchar) % 3 <> 0
            """
        )
        connection.execute(
            """
            create table marts.drug_dispensations as
            select ben_idt_ano, make_date(y, 1 + (hash(ben_idt_ano) % 12)::integer, 10) as dispensing_date,
                   '3400930000000' as cip13,
                   case hash(ben_idt_ano) % 4 when 0 then 'C10AA05' when 1 then 'N02BE01' else 'A10BA02' end
                       as atc_code,
                   1 + (hash(ben_idt_ano) % 3)::integer as boxes, 5.0 as unit_price,
                   3313 as benefit_nature_code, false as is_for_information_only
            from marts.persons, (values (2023), (2024)) v(y), range(2) r(n)
            where hash(ben_idt_ano || y::varchar) % 5 <> 0
            """
        )
        # One stay per fifth person; the child Q00000 has 12 stays; Q00001 has 200 stays among others.
        connection.execute(
            """
            create table marts.hospital_stays as
            select 2024 as pmsi_year, '750000001' as eta_num, row_number() over () as rsa_num, ben_idt_ano,
                   date '2024-05-02' as stay_start_date, 2 as length_of_stay_days, sex_code,
                   2024 - birth_year as age_years, null::integer as age_days, residence_departement,
                   'I214' as principal_diagnosis, false as is_error_stay
            from marts.persons,
                 range(case ben_idt_ano when 'Q00000' then 12 when 'Q00001' then 200 else 1 end)
            where ben_idt_ano in ('Q00000', 'Q00001') or hash(ben_idt_ano) % 5 = 0
            """
        )
    return path


def _spec(**overrides) -> IndicatorSpec:
    values = dict(
        name="diabetes",
        unit="patients",
        algorithm="alg_treated_diabetes",
        breakdown=("year", "sex", "age_band", "region"),
        year_from=2023,
        year_to=2024,
    )
    return IndicatorSpec(**{**values, **overrides})


def _publish(warehouse: Path, root: Path, spec: IndicatorSpec):
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        return run_indicator(
            connection,
            DuckDBWarehouse(warehouse),
            spec,
            root / "indicators",
            root / "log.jsonl",
            request_id=spec.name,
            requester="attacker",
            now=NOW,
        )


def _published_tables(root: Path) -> list[tuple[IndicatorSpec, pd.DataFrame]]:
    """What the attacker downloaded: every published CSV, with the definition in its JSON."""
    found = []
    # One folder per request: <root>/indicators/<name>/<request_id>/<name>.json and .csv.
    for folder in sorted(p for p in (root / "indicators").glob("*/*") if p.is_dir()):
        name = folder.parent.name
        document = json.loads((folder / f"{name}.json").read_text())
        definition = document["metadata"]["definition"]
        spec = IndicatorSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in definition.items()})
        frame = pd.read_csv(folder / f"{name}.csv", dtype=str, keep_default_na=False)
        frame["count"] = pd.to_numeric(frame["count"].replace("", None)).astype("Int64")
        found.append((spec, frame))
    assert found, "the attacker found no published table: the attack would pass vacuously"
    return found


AGES = ["0-17", "18-39", "40-64", "65-79", "80+", "unknown"]
BROAD = {
    "0-17": "0-17",
    "18-39": "18-64",
    "40-64": "18-64",
    "65-79": "65+",
    "80+": "65+",
    "unknown": "unknown",
}


def _attack_indicators(tables: list[tuple[IndicatorSpec, pd.DataFrame]]) -> None:
    """One population's tables against finest cells year × sex × age × département."""
    finest = {
        "year": ["2023", "2024"],
        "sex": ["male", "female", "unknown"],
        "age": AGES,
        "departement": [*DEPARTEMENT_REGION, "unknown"],
    }
    coarsen = {
        "year": lambda cell: cell[0],
        "sex": lambda cell: cell[1],
        "departement": lambda cell: cell[3],
        "region": lambda cell: DEPARTEMENT_REGION.get(cell[3], "unknown"),
    }
    prepared = []
    for spec, frame in tables:
        mapping = {name: coarsen[name] for name in spec.breakdown if name != "age_band"}
        if "age_band" in spec.breakdown:
            broad = tuple(spec.age_bands) != (0, 18, 40, 65, 80)
            mapping["age_band"] = (lambda cell: BROAD[cell[2]]) if broad else (lambda cell: cell[2])
        prepared.append((frame, "count", mapping))
    assert_resists(finest, prepared)


def test_free_age_bands_and_breakdowns_are_refused(warehouse, tmp_path):
    for overrides, reason in [
        ({"age_bands": (0, 80)}, "invalid_age_bands"),
        ({"age_bands": (0, 81)}, "invalid_age_bands"),
        ({"breakdown": ("sex", "year", "departement")}, "invalid_breakdown"),
    ]:
        with pytest.raises(OpenDataRefused) as refused:
            _publish(warehouse, tmp_path, _spec(**overrides))
        assert refused.value.reason == reason and refused.value.message


def test_region_and_departement_tables_together_resist(warehouse, tmp_path):
    """Hierarchical margins: the same population by région, by département and with other age bands."""
    requests = [
        _spec(name="by-region", breakdown=("year", "sex", "region")),
        _spec(name="by-departement", breakdown=("year", "sex", "departement")),
        _spec(name="by-age", breakdown=("year", "sex", "age_band")),
        _spec(name="by-broad-age", breakdown=("year", "sex", "age_band"), age_bands=(0, 18, 65)),
        _spec(name="full", breakdown=("year", "sex", "age_band", "region")),
    ]
    outcomes = {}
    for request in requests:
        try:
            _publish(warehouse, tmp_path, request)
            outcomes[request.name] = "published"
        except OpenDataRefused as refusal:
            assert refusal.reason in {"conflicts_with_published", "unprotectable_table"} and refusal.message
            outcomes[request.name] = refusal.reason
    assert outcomes["by-region"] == "published" and list(outcomes.values()).count("published") >= 3
    logged = read_log(tmp_path / "log.jsonl")
    assert [r["outcome"] for r in logged] == [
        "published" if o == "published" else "refused" for o in outcomes.values()
    ]
    _attack_indicators(_published_tables(tmp_path))


def test_events_are_held_to_persons_and_dominance(warehouse, tmp_path):
    stays = _publish(
        warehouse,
        tmp_path,
        _spec(
            name="stays",
            unit="stays",
            algorithm=None,
            icd10_prefixes=("I21",),
            breakdown=("year", "sex", "age_band"),
            year_from=2024,
            year_to=2024,
        ),
    )
    table = stays.protected.table.set_index(["year", "sex", "age_band"])
    # One child, 12 stays: never published as 12.
    assert pd.isna(table.loc[("2024", "unknown", "0-17"), "count"])
    # Q00001 holds 200 of its cell's stays: the dominance rule hides it though it has many patients.
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        sex, age = connection.execute(
            "select case sex_code when '1' then 'male' else 'female' end, 2024 - birth_year "
            "from marts.persons where ben_idt_ano = 'Q00001'"
        ).fetchone()
    band = next(
        label
        for low, label in [(80, "80+"), (65, "65-79"), (40, "40-64"), (18, "18-39"), (0, "0-17")]
        if age >= low
    )
    assert pd.isna(table.loc[("2024", sex, band), "count"])
    _attack_indicators([(stays.spec, stays.protected.table)])


def test_indicator_job_and_open_dispensations_resist(warehouse, tmp_path):
    resources = {
        "warehouse": WarehouseResource(path=str(warehouse)),
        "open_science": OpenScienceResource(
            indicator_root=str(tmp_path / "indicators"),
            request_log=str(tmp_path / "log.jsonl"),
            public_root=str(tmp_path / "public"),
            challenge_root=str(tmp_path / "challenges"),
        ),
    }
    config = {
        "name": "diabetes-departement",
        "algorithm": "alg_treated_diabetes",
        "breakdown": ["year", "sex", "departement"],
        "year_from": 2023,
        "year_to": 2024,
    }
    with dg.instance_for_test() as instance:
        for name, breakdown in [
            ("diabetes-departement", ["year", "sex", "departement"]),
            ("diabetes-region", ["year", "sex", "region"]),
        ]:
            result = indicator_job.execute_in_process(
                run_config={
                    "ops": {"compute_indicator": {"config": {**config, "name": name, "breakdown": breakdown}}}
                },
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )
            if not result.success:
                error = result.failure_data_for_node("compute_indicator").error
                assert "conflicts_with_published" in error.message
        assert dg.materialize([open_dispensations], resources=resources, instance=instance).success
    _attack_indicators(_published_tables(tmp_path))

    folder = tmp_path / "public" / "dispensations_atc_year_region"
    frame = pd.read_parquet(folder / "dispensations_atc_year_region.parquet")
    metadata = json.loads((folder / "metadata.json").read_text())
    assert "suppression" not in frame.columns and "primary" not in json.dumps(metadata)
    classes = sorted(set(frame["atc_class"]) - {TOTAL})
    years = sorted(set(frame["year"]) - {TOTAL})
    regions = sorted(set(frame["region"]) - {TOTAL})
    finest = {"atc_class": classes, "year": years, "region": regions}
    coarsen = {name: by_name(name, i) for i, name in enumerate(finest)}
    for measure in ("patients", "dispensations", "boxes"):
        assert_resists(finest, [(frame, measure, coarsen)])


# ---------------------------------------------------------------- catalogue statistics


@pytest.mark.parametrize(
    ("records_by_person", "records_shown"),
    [
        ([3] * 10, False),  # 30 records of 10 persons: under the threshold in persons
        ([1] * 11, True),  # 11 persons: shown
        ([200, 1] + [1] * 10, False),  # 12 persons, one holds nearly all records: dominance
        ([5] * 12, True),  # 12 persons, evenly: shown
    ],
)
def test_catalogue_statistics_hold_records_to_persons(tmp_path, records_by_person, records_shown):
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute("create schema marts")
        connection.execute(
            "create table marts.visits as select 'P' || p::varchar as ben_idt_ano, "
            "date '2024-03-01' as visit_date "
            "from (select unnest(?) as n, generate_subscripts(?, 1) as p), range(n)",
            [records_by_person, records_by_person],
        )
    description = DatasetDescription(
        identifier="marts/visits",
        name="visits",
        title="Visits",
        description="planted",
        layer=Layer.MARTS,
        family="MARTS",
        variables=(Variable("ben_idt_ano", "varchar", "person"), Variable("visit_date", "date", "date")),
        person_columns=("ben_idt_ano",),
        event_date="visit_date",
        relation="marts.visits",
    )
    statistics = warehouse_statistics(description, DuckDBWarehouse(path), reference=date(2026, 1, 1))
    assert statistics.records_suppressed is not records_shown
    assert statistics.records == (sum(records_by_person) if records_shown else None)
    persons = len(records_by_person)
    assert statistics.individuals == (persons if persons >= DISCLOSURE_THRESHOLD else None)
    # The month is covered only with enough distinct persons in it, whatever its records.
    assert (statistics.coverage_start is not None) is (persons >= DISCLOSURE_THRESHOLD)
