"""Quality gates on raw tables: real Great Expectations, real DuckDB, Parquet written by the raw loader.

A clean synthetic delivery passes every expectation; each planted defect is
caught by the expectation meant for it, with its severity; pseudonyms never
appear whole in a report or its HTML page; the SNDS reference samples hold
exactly the 68 non-integer cells the reference's notes announce.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from hdh_deliver.manifest import CSV, FileEntry
from hdh_pipelines.core.sql import quote_identifier, quote_literal
from hdh_pipelines.ingestion.raw_store import load_file
from hdh_pipelines.open_science.synthetic import generate_snds
from hdh_pipelines.quality import SuiteError, ValidationReport, build_suite, validate_table
from hdh_pipelines.quality._gx import gx
from hdh_pipelines.quality.suites import generated_expectations
from hdh_pipelines.registry import DatasetSchema, Field, default_registry

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared/reference/snds/synthetic-snds"
# Two years back: every synthetic date (claims flow into the next year) is then in the past.
YEAR = date.today().year - 2
YY = f"{YEAR % 100:02d}"
DCIR_KEY = "+".join(default_registry().resolve("ER_PRS_F").primary_key)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A clean synthetic delivery loaded by the raw loader: registry dataset name -> Parquet file."""
    folder = tmp_path_factory.mktemp("raw")
    tables = {}
    for delivered, csv_path in generate_snds(folder / "csv", persons=300, year=YEAR).items():
        schema = default_registry().resolve(delivered)
        entry = FileEntry(
            csv_path.name, delivered, CSV, "none", 0, "", "", 0, encoding="utf-8", delimiter=";"
        )
        destination = folder / f"{schema.name}.parquet"
        load_file(
            csv_path,
            entry,
            schema,
            destination,
            provider="cnam",
            delivery_id="test-001",
            loaded_at=datetime.now(UTC),
            scratch=folder,
        )
        tables[schema.name] = destination
    return tables


def _validate(name: str, path: Path, raw: Mapping[str, Path], **kwargs: object) -> ValidationReport:
    related = {other: [p] for other, p in raw.items() if other != name}
    return validate_table(default_registry().resolve(name), [path], related=related, **kwargs)


def _plant(source: Path, destination: Path, select: str) -> Path:
    """Write ``select`` over ``t`` (the clean table, row number ``n``) as a new raw Parquet file."""
    duckdb.execute(
        f"COPY (WITH t AS (SELECT *, row_number() OVER () AS n "
        f"FROM read_parquet({quote_literal(str(source))})) "
        f"{select}) TO {quote_literal(str(destination))} (FORMAT parquet)"
    )
    return destination


def _replace(column: str, value: str, where: str) -> str:
    """SELECT the clean table with ``column`` set to the SQL ``value`` on the rows matching ``where``."""
    c = quote_identifier(column)
    return f"SELECT * EXCLUDE (n) REPLACE (CASE WHEN {where} THEN {value} ELSE {c} END AS {c}) FROM t"


def test_a_clean_delivery_passes_every_expectation(raw: dict[str, Path]) -> None:
    for name, path in raw.items():
        report = _validate(name, path, raw)
        assert report.rows > 0
        assert report.success, name
        failing = [(o.name, o.description) for o in report.outcomes if o.success is not True]
        assert failing == [], name
        assert all(o.evaluated for o in report.outcomes)
    # The SNDS "unknown date" is there and accepted by type and plausibility checks alike.
    sentinels = duckdb.execute(
        f"SELECT count(*) FROM read_parquet({quote_literal(str(raw['ER_PRS_F']))}) "
        "WHERE EXE_SOI_DTF = '1600-01-01'"
    ).fetchone()[0]
    assert sentinels > 0


DEFECTS = [
    # id, dataset, SELECT over t, failures expected (name -> severity), unexpected count of the first
    (
        "duplicate claim keys",
        "ER_PRS_F",
        "SELECT * EXCLUDE (n) FROM t UNION ALL SELECT * EXCLUDE (n) FROM t WHERE n <= 3",
        {f"{DCIR_KEY}:unique": "error"},
        3,
    ),
    (
        "pharmacy rows without their claim",
        "ER_PHA_F",
        _replace("PRS_ORD_NUM", "'99'", "n <= 2"),
        {"ER_PRS_F:orphans": "error"},
        2,
    ),
    (
        "patient link without its stay",
        "T_MCOaaC",
        _replace("RSA_NUM", "'1999999999'", "n = 1"),
        {"T_MCOaaB:orphans": "error"},
        1,
    ),
    # schema-snds's 1..120 bounds its generator, not the SNDS: an implausible age is reported, not held.
    (
        "age out of range",
        "T_MCOaaB",
        _replace("AGE_ANN", "'150'", "n <= 2"),
        {"AGE_ANN:plausible": "warning"},
        2,
    ),
    (
        "sex codes outside IR_SEX_V",
        "ER_PRS_F",
        _replace("BEN_SEX_COD", "'3'", "n % 50 = 0"),
        {"BEN_SEX_COD:in_set": "error", "BEN_SEX_COD:known": "warning"},
        None,
    ),
    (
        "unknown sex codes above 0.1 %",
        "IR_BEN_R",
        _replace("BEN_SEX_COD", "'9'", "n <= 3"),
        {"BEN_SEX_COD:known": "warning"},
        3,
    ),
    (
        "unknown opt-out scope",
        "OPT_OUT",
        _replace("OPT_SCOPE", "'EVERYTHING'", "n = 1"),
        {"OPT_SCOPE:in_set": "error"},
        1,
    ),
    (
        "unknown PMSI sex codes above 0.1 %",
        "T_MCOaaB",
        _replace("COD_SEX", "'9'", "n <= 3"),
        {"COD_SEX:known": "warning"},
        3,
    ),
    (
        "claims without beneficiary above 0.1 %",
        "ER_PRS_F",
        _replace("BEN_NIR_PSA", "NULL", "n % 100 = 0"),
        {"BEN_NIR_PSA:not_null": "warning", "IR_BEN_R:orphans": "warning"},
        None,
    ),
    (
        "care in the future",
        "ER_PRS_F",
        _replace("EXE_SOI_DTD", f"'{date.today() + timedelta(days=30):%Y-%m-%d}'", "n = 1"),
        {"EXE_SOI_DTD:not_future": "warning"},
        1,
    ),
    (
        "pseudonym too long",
        "IR_BEN_R",
        _replace("BEN_NIR_PSA", "BEN_NIR_PSA || 'X'", "n = 1"),
        {"BEN_NIR_PSA:length": "error"},
        1,
    ),
    (
        "stay pseudonym too short",
        "T_MCOaaC",
        _replace("NIR_ANO_17", "left(NIR_ANO_17, 16)", "n = 1"),
        {"NIR_ANO_17:length": "error", "IR_BEN_R:orphans": "warning"},
        1,
    ),
    (
        "amount with a decimal comma",
        "ER_PRS_F",
        _replace("PRS_PAI_MNT", "'12,50'", "n = 1"),
        {"PRS_PAI_MNT:type": "error"},
        1,
    ),
]


@pytest.mark.parametrize(
    ("dataset", "select", "expected", "count"),
    [case[1:] for case in DEFECTS],
    ids=[case[0] for case in DEFECTS],
)
def test_each_planted_defect_is_caught_with_its_severity(
    raw: dict[str, Path],
    tmp_path: Path,
    dataset: str,
    select: str,
    expected: dict[str, str],
    count: int | None,
) -> None:
    planted = _plant(raw[dataset], tmp_path / f"{dataset}.parquet", select)
    report = _validate(dataset, planted, raw)
    assert {o.name: o.severity for o in report.failures} == expected
    assert report.success is ("error" not in expected.values())
    first = report.outcome(next(iter(expected)))
    if count is not None:
        assert first.unexpected_count == count
    assert first.sample_unexpected and first.description.startswith(f"Failed ({first.severity})")


def test_thresholds_and_the_date_sentinel(raw: dict[str, Path], tmp_path: Path) -> None:
    # One claim in ~2,000 without pseudonym is under the 0.1 % allowed; the sentinel is no future date.
    select = (
        "SELECT * EXCLUDE (n) REPLACE (CASE WHEN n = 1 THEN NULL ELSE BEN_NIR_PSA END AS BEN_NIR_PSA, "
        "CASE WHEN n % 10 = 0 THEN '1600-01-01' ELSE EXE_SOI_DTD END AS EXE_SOI_DTD) FROM t"
    )
    report = _validate("ER_PRS_F", _plant(raw["ER_PRS_F"], tmp_path / "p.parquet", select), raw)
    nulls = report.outcome("BEN_NIR_PSA:not_null")
    assert nulls.success and nulls.unexpected_count == 1 and nulls.threshold == 0.999
    assert report.outcome("EXE_SOI_DTD:not_future").success
    assert report.outcome("EXE_SOI_DTD:type").success
    # Only the claim without pseudonym is unknown to IR_BEN_R (a warning, under no threshold).
    assert [o.name for o in report.failures] == ["IR_BEN_R:orphans"] and report.success


def test_a_cross_table_expectation_without_its_dataset_is_not_evaluated(raw: dict[str, Path]) -> None:
    report = validate_table(default_registry().resolve("ER_PHA_F"), [raw["ER_PHA_F"]])
    orphans = report.outcome("ER_PRS_F:orphans")
    assert (orphans.evaluated, orphans.success, orphans.failed) == (False, None, False)
    assert orphans.description.startswith("Not evaluated") and "ER_PRS_F" in orphans.description
    assert report.success


def test_pseudonyms_are_masked_in_reports_and_html(raw: dict[str, Path], tmp_path: Path) -> None:
    secret = "SECRETPSEUDONYM0042"  # 19 characters: fails the length check
    twin = "DUPLICATEPSEUDO17"
    select = (
        f"SELECT * EXCLUDE (n) REPLACE (CASE WHEN n = 1 THEN '{secret}' WHEN n IN (2, 3) THEN '{twin}' "
        "ELSE BEN_NIR_PSA END AS BEN_NIR_PSA, "
        "CASE WHEN n IN (2, 3) THEN '1' ELSE BEN_RNG_GEM END AS BEN_RNG_GEM) "
        "FROM t"
    )
    planted = _plant(raw["IR_BEN_R"], tmp_path / "IR_BEN_R.parquet", select)
    report = _validate("IR_BEN_R", planted, raw, docs_dir=tmp_path / "docs")
    assert report.outcome("BEN_NIR_PSA:length").sample_unexpected == ("SEC… (19 characters)",)
    duplicates = report.outcome("BEN_NIR_PSA+BEN_RNG_GEM:unique")
    assert duplicates.failed and duplicates.sample_unexpected == (
        "BEN_NIR_PSA=DUP… (17 characters), BEN_RNG_GEM=… (1 character), copies=2",
    )
    page = report.data_docs_path.read_text(encoding="utf-8")
    for value in (secret, twin):
        assert value not in repr(report) and value not in page
    assert "SEC… (19 characters)" in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing to fetch


def test_one_broken_expectation_does_not_fail_the_others(raw: dict[str, Path], tmp_path: Path) -> None:
    schema = default_registry().resolve("OPT_OUT")
    broken = {
        "type": "unexpected_rows_expectation",
        "kwargs": {"unexpected_rows_query": "SELECT NO_SUCH_COLUMN FROM {batch}"},
        "meta": {
            "name": "broken",
            "category": "conformance",
            "severity": "warning",
            "description": "Broken.",
        },
    }
    (tmp_path / "OPT_OUT.json").write_text(json.dumps({"name": "OPT_OUT", "expectations": [broken]}))
    report = validate_table(schema, [raw["OPT_OUT"]], suite=build_suite(schema, directory=tmp_path))
    assert [o.name for o in report.failures] == ["broken"]
    assert report.outcome("broken").description.startswith("Could not be evaluated")
    assert report.success  # a broken warning blocks nothing; every other expectation still ran and passed


def test_suites_follow_the_registry() -> None:
    registry = default_registry()
    for name in registry.names():
        schema = registry.resolve(name)
        suite = build_suite(schema)
        names = [e.meta["name"] for e in suite.expectations]
        assert len(names) == len(set(names)) == len(suite.expectations)
        for expectation in suite.expectations:
            assert {"category", "severity", "description"} <= set(expectation.meta)
        covered = {r for e in suite.expectations for r in e.meta.get("related", [])}
        # Foreign keys are checked by the hand-written suites (expectations/); the generated datasets'
        # foreign keys come from schema-snds and are documented, not yet checked at delivery.
        if not schema.generated:
            assert {fk.resource for fk in schema.foreign_keys} <= covered, (
                f"{name}: a foreign key is not checked"
            )
    # Uniqueness follows IR_BEN_R's key, not the reference's column-level (wrong) unique constraints.
    ben = [
        e.meta["name"]
        for e in build_suite(registry.resolve("IR_BEN_R")).expectations
        if ":unique" in e.meta["name"]
    ]
    assert ben == ["BEN_NIR_PSA+BEN_RNG_GEM:unique"]
    # A hand-written expectation replaces the generated one of the same name (exact pseudonym length).
    length = next(
        e
        for e in build_suite(registry.resolve("ER_PRS_F")).expectations
        if e.meta["name"] == "BEN_NIR_PSA:length"
    )
    assert length.expectation_type == "expect_column_value_lengths_to_equal"


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"name": "x", "category": "conformance", "description": "d"}, "lacks severity"),
        ({"name": "x", "category": "accuracy", "severity": "error", "description": "d"}, "category must be"),
    ],
)
def test_a_hand_written_suite_without_its_meta_is_refused(tmp_path: Path, meta: dict, message: str) -> None:
    spec = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "OPT_SCOPE"}, "meta": meta}
    (tmp_path / "OPT_OUT.json").write_text(json.dumps({"name": "OPT_OUT", "expectations": [spec]}))
    with pytest.raises(SuiteError, match=message):
        build_suite(default_registry().resolve("OPT_OUT"), directory=tmp_path)


def test_nothing_reaches_the_network(raw: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network connection attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert os.environ["GX_ANALYTICS_ENABLED"] == "False"
    assert _validate("OPT_OUT", raw["OPT_OUT"], raw).success


def _reference_schema(path: Path) -> DatasetSchema:
    """A reference schema-snds table as a DatasetSchema (the registry keeps only some of its columns)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    fields = tuple(
        Field(
            name=f["name"],
            type=f["type"],
            required=False,
            description="",
            constraints={},
            format=None if f.get("format") in (None, "default") else f["format"],
        )
        for f in document["fields"]
    )
    return DatasetSchema(
        path.stem, path.stem, "", fields, (), (), "REFERENCE", None, {"fields": document["fields"]}
    )


def test_the_reference_samples_hold_68_non_integer_cells(tmp_path: Path) -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"SNDS synthetic samples not found at {REFERENCE}.")
    found, expected = {}, {}
    for csv_path in sorted((REFERENCE / "schemas").rglob("*.csv")):
        schema = _reference_schema(csv_path.with_suffix(".json"))
        integers = [f.name for f in schema.fields if f.type == "integer"]
        if not integers:
            continue
        source = f"read_csv({quote_literal(str(csv_path))}, header = true, all_varchar = true)"
        parquet = tmp_path / f"{schema.name}.parquet"
        duckdb.execute(f"COPY (SELECT * FROM {source}) TO {quote_literal(str(parquet))} (FORMAT parquet)")
        type_checks = {f"{c}:type" for c in integers}
        suite = gx.ExpectationSuite(
            name=schema.name,
            expectations=[e for e in generated_expectations(schema) if e.meta["name"] in type_checks],
        )
        report = validate_table(schema, [parquet], suite=suite)
        for outcome in report.failures:
            found[(schema.name, outcome.columns[0])] = outcome.unexpected_count
        # Independently: DuckDB's TRY_CAST alone is lenient ('40.00' -> 40, '1_5' -> 15), so a cell is
        # an integer only if it casts and holds nothing but digits after an optional sign.
        for column in integers:
            c = quote_identifier(column)
            bad = duckdb.execute(
                f"SELECT count(*) FROM {source} WHERE {c} IS NOT NULL AND (TRY_CAST({c} AS BIGINT) IS NULL "
                f"OR length(translate(ltrim({c}, '+-'), '0123456789', '')) > 0)"
            ).fetchone()[0]
            if bad:
                expected[(schema.name, column)] = bad
    assert sum(found.values()) == 68
    assert found == expected
