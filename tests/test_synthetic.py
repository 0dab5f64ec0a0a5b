"""The synthetic SNDS extracts: layout from the registry, keys that join, values that fit, determinism."""

from __future__ import annotations

import csv
import re
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from hdh_pipelines.open_science.synthetic import SYNTHETIC_DRUGS, generate_snds
from hdh_pipelines.registry import DatasetSchema, Field, default_registry

DATASETS = [
    "IR_BEN_R", "ER_PRS_F", "ER_PHA_F", "T_MCO25B", "T_MCO25C", "T_MCO25D", "OPT_OUT", "COHORT_EXT",
    "IR_PHA_R", "IR_CIM_V", "FINESS_PMSI_DOUBLONS",
]  # fmt: skip
# The 9 keys joining claims to their pharmacy detail, as the registry declares them.
DCIR_KEYS = default_registry().resolve("ER_PRS_F").primary_key
# Uniqueness the reference declares but real data breaks, and so does the generator on purpose:
# twins share BEN_NIR_PSA; a person known under two BEN_NIR_PSA has one BEN_IDT_ANO on both rows.
KNOWN_NON_UNIQUE = {("IR_BEN_R", "BEN_NIR_PSA"), ("IR_BEN_R", "BEN_IDT_ANO")}


@pytest.fixture(scope="module")
def extracts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_snds(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def db(extracts: dict[str, Path]) -> duckdb.DuckDBPyConnection:
    """Every extract as a text-only view named after its dataset, read the way the raw layer reads it."""
    connection = duckdb.connect()
    for dataset, path in extracts.items():
        connection.execute(
            f"CREATE VIEW {dataset} AS SELECT * FROM read_csv('{path}', delim = ';', header = true, "
            "all_varchar = true, quote = '\"')"
        )
    return connection


def _one(db: duckdb.DuckDBPyConnection, query: str) -> object:
    return db.execute(query).fetchone()[0]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def test_one_non_empty_file_per_dataset(extracts: dict[str, Path], db: duckdb.DuckDBPyConnection) -> None:
    assert list(extracts) == DATASETS
    for dataset, path in extracts.items():
        assert path.name == f"{dataset}.csv"
        assert _one(db, f"SELECT count(*) FROM {dataset}") > 0, dataset


def test_headers_are_the_registry_columns_in_order(extracts: dict[str, Path]) -> None:
    registry = default_registry()
    for dataset, path in extracts.items():
        header = path.read_text(encoding="utf-8").split("\n", 1)[0]
        assert header.split(";") == [f.name for f in registry.resolve(dataset).own_fields], dataset


def test_every_pharmacy_line_matches_exactly_one_claim(db: duckdb.DuckDBPyConnection) -> None:
    on = " AND ".join(f"c.{k} = p.{k}" for k in DCIR_KEYS)
    matches = db.execute(
        f"SELECT (SELECT count(*) FROM ER_PRS_F c WHERE {on}) AS n FROM ER_PHA_F p"
    ).fetchall()
    assert matches and {n for (n,) in matches} == {1}
    keys = ", ".join(DCIR_KEYS)
    distinct = _one(db, f"SELECT count(DISTINCT ({keys})) FROM ER_PRS_F")
    assert _one(db, "SELECT count(*) FROM ER_PRS_F") == distinct


def test_codes_come_from_the_delivered_referentials(db: duckdb.DuckDBPyConnection) -> None:
    # The pharmacy dispenses only presentations of the drug referential it delivers, each with an ATC class;
    # every diagnosis of a stay has a label in the delivered ICD-10 nomenclature.
    assert _one(db, "SELECT count(*) FROM ER_PHA_F ANTI JOIN IR_PHA_R ON PHA_CIP_C13 = PHA_PRS_C13") == 0
    assert _one(db, "SELECT count(*) FROM IR_PHA_R WHERE PHA_ATC_C07 IS NULL") == 0
    diagnoses = (
        "SELECT DGN_PAL AS code FROM T_MCO25B UNION SELECT DGN_REL FROM T_MCO25B WHERE DGN_REL IS NOT NULL "
        "UNION SELECT ASS_DGN FROM T_MCO25D"
    )
    assert _one(db, f"SELECT count(*) FROM ({diagnoses}) d ANTI JOIN IR_CIM_V ON CIM_COD = code") == 0


def test_claims_belong_to_beneficiaries(db: duckdb.DuckDBPyConnection) -> None:
    orphans = _one(
        db,
        "SELECT count(*) FROM ER_PRS_F c ANTI JOIN IR_BEN_R b "
        "ON b.BEN_NIR_PSA = c.BEN_NIR_PSA AND b.BEN_RNG_GEM = c.BEN_RNG_GEM",
    )
    assert orphans == 0


def test_pmsi_tables_join_their_stays_and_the_referential(db: duckdb.DuckDBPyConnection) -> None:
    assert _one(db, "SELECT count(*) FROM T_MCO25C") == _one(db, "SELECT count(*) FROM T_MCO25B")
    for detail in ("T_MCO25C", "T_MCO25D"):
        unmatched = _one(db, f"SELECT count(*) FROM {detail} d ANTI JOIN T_MCO25B b USING (ETA_NUM, RSA_NUM)")
        assert unmatched == 0, detail
    unknown = "SELECT count(*) FROM T_MCO25C c ANTI JOIN IR_BEN_R b ON b.BEN_NIR_PSA = c.NIR_ANO_17"
    assert _one(db, unknown) == 0
    das = _one(db, "SELECT sum(NBR_DGN::INTEGER) FROM T_MCO25B")
    assert das == _one(db, "SELECT count(*) FROM T_MCO25D")


def test_population_has_the_cases_pipelines_must_handle(db: duckdb.DuckDBPyConnection) -> None:
    twins = _one(db, "SELECT count(*) FROM (SELECT BEN_NIR_PSA FROM IR_BEN_R GROUP BY 1 HAVING count(*) > 1)")
    assert twins > 0
    assert _one(db, "SELECT count(*) FROM IR_BEN_R WHERE BEN_RNG_GEM = '2'") == twins
    two_pseudonyms = _one(
        db, "SELECT count(*) FROM (SELECT BEN_IDT_ANO FROM IR_BEN_R GROUP BY 1 HAVING count(*) > 1)"
    )
    assert two_pseudonyms > 0
    assert _one(db, "SELECT count(*) FROM IR_BEN_R WHERE BEN_DCD_DTE = '1600-01-01'") > 0
    assert _one(db, "SELECT count(*) FROM IR_BEN_R WHERE BEN_DCD_DTE <> '1600-01-01'") > 0
    assert _one(db, "SELECT count(*) FROM IR_BEN_R WHERE BEN_NAI_ANN::INTEGER NOT BETWEEN 1920 AND 2024") == 0
    assert _one(db, "SELECT count(*) FROM T_MCO25B WHERE DGN_PAL BETWEEN 'I21' AND 'I24Z'") > 0
    assert _one(db, "SELECT count(*) FROM T_MCO25D WHERE ASS_DGN = 'E119'") > 0
    assert _one(db, "SELECT count(DISTINCT PHA_PRS_C13) FROM ER_PHA_F") == len(SYNTHETIC_DRUGS)
    opted_out_twin = _one(
        db,
        "SELECT count(*) FROM OPT_OUT o JOIN IR_BEN_R b USING (BEN_NIR_PSA, BEN_RNG_GEM) "
        "WHERE o.BEN_RNG_GEM = '2'",
    )
    assert opted_out_twin > 0


def test_cohort_pseudonyms_are_sometimes_missing_or_wrong(db: duckdb.DuckDBPyConnection) -> None:
    missing = _one(db, "SELECT count(*) FROM COHORT_EXT WHERE BEN_NIR_PSA IS NULL")
    wrong = _one(
        db,
        "SELECT count(*) FROM COHORT_EXT c WHERE BEN_NIR_PSA IS NOT NULL "
        "AND BEN_NIR_PSA NOT IN (SELECT BEN_NIR_PSA FROM IR_BEN_R)",
    )
    linked = _one(db, "SELECT count(*) FROM COHORT_EXT c SEMI JOIN IR_BEN_R b USING (BEN_NIR_PSA)")
    assert missing > 0 and wrong > 0 and linked > missing + wrong


def _check(schema: DatasetSchema, f: Field, value: str) -> str | None:
    """Why ``value`` breaks the declared type, format or constraints, or None if it fits."""
    c = f.constraints
    if f.type in {"integer", "year"}:
        parsed: object = int(value)
    elif f.type == "number":
        parsed = float(value)
    elif f.type == "date":
        parsed = datetime.strptime(value, f.format or "%Y-%m-%d")
    elif f.type == "datetime":
        parsed = datetime.strptime(value, f.format or "%Y-%m-%dT%H:%M:%SZ")
    elif f.type == "boolean":
        spec = schema.raw["fields"][schema.column_names.index(f.name)]
        allowed = spec.get("trueValues", ["true", "True", "TRUE", "1"]) + spec.get(
            "falseValues", ["false", "False", "FALSE", "0"]
        )
        return None if value in allowed else "not a declared boolean value"
    else:
        parsed = value
        if "minLength" in c and len(value) < c["minLength"]:
            return "too short"
        if "maxLength" in c and len(value) > c["maxLength"]:
            return "too long"
        if "pattern" in c and not re.fullmatch(c["pattern"], value):
            return "does not match the pattern"
    if "enum" in c and parsed not in c["enum"]:
        return "not in the enum"
    if "minimum" in c and parsed < c["minimum"]:
        return "below the minimum"
    if "maximum" in c and parsed > c["maximum"]:
        return "above the maximum"
    return None


def test_values_fit_the_registry(extracts: dict[str, Path]) -> None:
    registry = default_registry()
    for dataset, path in extracts.items():
        schema = registry.resolve(dataset)
        rows = _rows(path)
        for f in schema.own_fields:  # the generator writes a curated dataset's own columns only
            values = [row[f.name] for row in rows]
            present = [v for v in values if v != ""]
            if f.required:
                assert len(present) == len(values), f"{dataset}.{f.name} is required"
            if f.constraints.get("unique") and (dataset, f.name) not in KNOWN_NON_UNIQUE:
                assert len(set(present)) == len(present), f"{dataset}.{f.name} is not unique"
            for value in present:
                problem = _check(schema, f, value)
                assert problem is None, f"{dataset}.{f.name} = {value!r}: {problem}"
        if schema.primary_key:
            keys = [tuple(row[k] for k in schema.primary_key) for row in rows]
            assert len(set(keys)) == len(keys), f"{dataset} repeats a primary key"


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path, extracts: dict[str, Path]) -> None:
    again = generate_snds(tmp_path / "again")
    other = generate_snds(tmp_path / "other", seed=7)
    for dataset, path in extracts.items():
        assert again[dataset].read_bytes() == path.read_bytes(), dataset
    assert other["IR_BEN_R"].read_bytes() != extracts["IR_BEN_R"].read_bytes()


def test_year_names_the_pmsi_tables_and_bounds_the_stays(tmp_path: Path) -> None:
    paths = generate_snds(tmp_path, persons=300, year=2023, seed=3)
    assert {"T_MCO23B", "T_MCO23C", "T_MCO23D"} <= set(paths)
    exit_years = {row["SOR_ANN"] for row in _rows(paths["T_MCO23B"])}
    assert exit_years == {"2023"}


def test_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="persons"):
        generate_snds(tmp_path, persons=0)
    with pytest.raises(ValueError, match="year"):
        generate_snds(tmp_path, year=1999)
