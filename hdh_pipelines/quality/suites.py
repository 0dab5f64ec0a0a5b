"""Expectation suites for raw tables: generated from the registry's Table Schema, plus hand-written ones.

Raw tables keep every column as delivered text (see ``raw_store``), so a suite
cannot compare ``BEN_NAI_ANN`` with 1900 directly. The batch that Great
Expectations validates is therefore a DuckDB view that adds *derived columns*
next to the raw ones, named after the field with a suffix:

- ``<FIELD>__value``: the value typed as declared (integer, date with its
  strptime ``format``…), NULL when the text is missing or does not parse; for
  dates, the dataset's sentinel dates (``hdh.sentinel_dates``: SNDS
  ``1600-01-01`` "unknown", ``9999-12-31`` "open end"…) are NULL too, at any
  time of the day, and so is the missing date's year in a ``year`` column
  (the SNDS writes an unknown birth year as 1600).
- ``<FIELD>__invalid``: the raw text when it does not parse as declared, else NULL.
- ``<FIELD>__unmatched``: the raw text when it does not match the field's ``pattern``.

Every check is then a native, column-wise Great Expectations expectation
(``expect_column_values_to_be_null`` on ``X__invalid`` is "X conforms to its
type"), which GX computes in one bundled SQL aggregate per table instead of one
query per check, with ``mostly`` thresholds and bounded samples. Only checks
that span rows or tables (uniqueness, orphans) are expressed otherwise.

A view holds only the columns the suite reads (``read_columns``; SQL
expectations declare theirs in ``meta.columns``), and ``column_sql`` is the
single place that says what each one means.

Every expectation carries ``meta``: ``name`` (stable, e.g. ``BEN_SEX_COD:in_set``),
``category`` (OHDSI DQD: conformance, completeness, plausibility), ``severity``
(``error`` blocks downstream, ``warning`` is reported) and ``description``.
Hand-written expectations live in ``expectations/<DATASET>.json`` (GX suite
JSON); one named like a generated expectation replaces it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hdh_pipelines.core.sql import quote_identifier, quote_literal
from hdh_pipelines.registry import DatasetSchema, Field

if TYPE_CHECKING:
    # GX costs seconds to import: it is imported by the functions that build a suite, so that loading
    # the code location (which only imports these modules) does not pay for it.
    from hdh_pipelines.quality._gx import Expectation, gx

EXPECTATIONS_ENV_VAR = "HDH_EXPECTATIONS_DIR"
EXPECTATIONS_DIR = Path(__file__).resolve().parents[2] / "expectations"

CATEGORIES = ("conformance", "completeness", "plausibility")
SEVERITIES = ("error", "warning")
VALUE_SUFFIX = "__value"
INVALID_SUFFIX = "__invalid"
UNMATCHED_SUFFIX = "__unmatched"
# Table Schema's default lexical forms (the SNDS schemas only name strptime formats).
DEFAULT_FORMATS = {"date": "%Y-%m-%d", "datetime": "%Y-%m-%dT%H:%M:%SZ", "yearmonth": "%Y-%m"}
# The types whose typed value is a DATE (a year and month is its first day).
_DATE_TYPES = ("date", "yearmonth")
_DEFAULT_TRUE = ("true", "True", "TRUE", "1")
_DEFAULT_FALSE = ("false", "False", "FALSE", "0")
# Strict lexical forms: DuckDB's casts alone are lenient ('1.5' -> 2, '1_5' -> 15, '0x1F' -> 31, ' 5' -> 5).
_INTEGER_RE = "[+-]?[0-9]+"
_NUMBER_RE = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?|NaN|[+-]?INF"
_YEAR_RE = "[0-9]{4}"
_SQL_TYPES = {"integer": "BIGINT", "number": "DOUBLE", "year": "INTEGER"}
_LEXICAL = {"integer": _INTEGER_RE, "number": _NUMBER_RE, "year": _YEAR_RE}


class SuiteError(ValueError):
    """A hand-written suite that cannot be trusted (the message names the file and the expectation)."""


def expectations_dir() -> Path:
    """``$HDH_EXPECTATIONS_DIR`` if set, else the repository's ``expectations/`` folder."""
    return Path(os.environ.get(EXPECTATIONS_ENV_VAR) or EXPECTATIONS_DIR)


def missing_date(schema: DatasetSchema) -> str | None:
    """The dataset's "unknown date" sentinel (SNDS: ``1600-01-01``), or None."""
    return schema.raw.get("hdh", {}).get("missing_date")


def identifier_columns(schema: DatasetSchema) -> frozenset[str]:
    """Columns whose values are pseudonymised identifiers and are never shown whole in a report."""
    names = {*schema.person_id, "BEN_IDT_ANO"}
    names.update(c for c in schema.column_names if "NIR" in c)
    return frozenset(names)


def base_column(column: str) -> str:
    """The delivered column a (possibly derived) column is computed from."""
    for suffix in (VALUE_SUFFIX, INVALID_SUFFIX, UNMATCHED_SUFFIX):
        if column.endswith(suffix):
            return column[: -len(suffix)]
    return column


def _field_json(schema: DatasetSchema, name: str) -> Mapping[str, Any]:
    return next(f for f in schema.raw["fields"] if f["name"] == name)


def _parsed_sql(schema: DatasetSchema, field: Field, raw: str) -> str:
    """SQL of ``field``'s typed value from its text ``raw``; NULL when it does not parse."""
    if field.type in _LEXICAL:
        lexical, sql_type = quote_literal(_LEXICAL[field.type]), _SQL_TYPES[field.type]
        return f"CASE WHEN regexp_full_match({raw}, {lexical}) THEN TRY_CAST({raw} AS {sql_type}) END"
    if field.type in DEFAULT_FORMATS:
        fmt = quote_literal(field.format or DEFAULT_FORMATS[field.type])
        # strptime skips surrounding blanks; a delivered value must not have any.
        parsed = f"CASE WHEN {raw} = trim({raw}) THEN try_strptime({raw}, {fmt}) END"
        return f"CAST({parsed} AS DATE)" if field.type in _DATE_TYPES else parsed
    if field.type == "boolean":
        spec = _field_json(schema, field.name)
        true = ", ".join(quote_literal(v) for v in spec.get("trueValues", _DEFAULT_TRUE))
        false = ", ".join(quote_literal(v) for v in spec.get("falseValues", _DEFAULT_FALSE))
        return f"CASE WHEN {raw} IN ({true}) THEN true WHEN {raw} IN ({false}) THEN false END"
    raise ValueError(f"{schema.name}.{field.name}: type {field.type!r} has no typed value.")


def column_sql(schema: DatasetSchema, column: str) -> str:
    """The SQL of ``column`` in the validated view, over raw columns whose missing values are NULL."""
    name = base_column(column)
    field = schema.field(name)
    raw = quote_identifier(name)
    if column == name:
        return raw
    if column.endswith(UNMATCHED_SUFFIX):
        pattern = quote_literal(field.constraints["pattern"])
        return f"CASE WHEN NOT regexp_full_match({raw}, {pattern}) THEN {raw} END"
    parsed = _parsed_sql(schema, field, raw)
    if column.endswith(INVALID_SUFFIX):
        return f"CASE WHEN {raw} IS NOT NULL AND ({parsed}) IS NULL THEN {raw} END"
    if schema.sentinel_dates and field.type in DEFAULT_FORMATS:
        days = ", ".join(f"DATE {quote_literal(day)}" for day in schema.sentinel_dates)
        return f"CASE WHEN CAST({parsed} AS DATE) NOT IN ({days}) THEN {parsed} END"
    unknown = missing_date(schema)
    if unknown and field.type == "year":
        return f"NULLIF({parsed}, {int(unknown[:4])})"
    return parsed


def expectation_columns(expectation: Expectation) -> tuple[str, ...]:
    """The view columns an expectation reads (``meta.columns`` for SQL expectations)."""
    # The fields themselves: GX's ``configuration`` rebuilds the whole configuration on every access.
    if (column := getattr(expectation, "column", None)) is not None:
        return (column,)
    if (column_list := getattr(expectation, "column_list", None)) is not None:
        return tuple(column_list)
    return tuple((expectation.meta or {}).get("columns", ()))


def read_columns(expectations: Iterable[Expectation]) -> list[str]:
    """The view columns (raw and derived) the expectations read, in first-use order.

    The validated view exposes these and no others: DuckDB binds every column
    of a view on every query, and GX sends dozens of queries per table.
    """
    found: dict[str, None] = {}
    for expectation in expectations:
        for column in expectation_columns(expectation):
            found[base_column(column)] = None
            found[column] = None
    return list(found)


def _expectation(
    type_: str,
    kwargs: Mapping[str, Any],
    *,
    name: str,
    category: str,
    severity: str,
    description: str,
    **meta: Any,
) -> Expectation:
    from hdh_pipelines.quality._gx import ExpectationConfiguration

    config = ExpectationConfiguration(
        type=type_,
        kwargs=dict(kwargs),
        meta={"name": name, "category": category, "severity": severity, "description": description, **meta},
    )
    return config.to_domain_obj()


def _range_text(low: Any, high: Any) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f"at least {low}" if high is None else f"at most {high}"


def _unique_keys(schema: DatasetSchema) -> list[tuple[str, ...]]:
    """The primary key, and column-level ``unique`` only where it cannot contradict the key.

    With a primary key, the key is the uniqueness contract: the SNDS reference
    declares ``unique`` on IR_BEN_R.BEN_NIR_PSA (shared by twins, its own
    constraint description says so) and on BEN_IDT_ANO (one person, several
    pseudonyms), and the registry keeps those constraints verbatim while its key
    is (BEN_NIR_PSA, BEN_RNG_GEM). Column ``unique`` counts only without a key.
    """
    if schema.primary_key:
        return [schema.primary_key]
    return [(f.name,) for f in schema.fields if f.constraints.get("unique")]


def generated_expectations(schema: DatasetSchema) -> list[Expectation]:
    """What the Table Schema alone says: required, keys, lengths, pattern, enum, range and type."""
    out = []
    for field in schema.fields:
        c = field.constraints
        name = field.name
        if field.required:
            out.append(
                _expectation(
                    "expect_column_values_to_not_be_null",
                    {"column": name, "mostly": 1.0},
                    name=f"{name}:not_null",
                    category="completeness",
                    severity="error",
                    description=f"{name} is required: every row must have a value.",
                )
            )
        if field.type != "string":
            fmt = field.format or DEFAULT_FORMATS.get(field.type)
            out.append(
                _expectation(
                    "expect_column_values_to_be_null",
                    {"column": name + INVALID_SUFFIX, "mostly": 1.0},
                    name=f"{name}:type",
                    category="conformance",
                    severity="error",
                    description=f"{name} must parse as {field.type}"
                    + (f" in format {fmt}" if fmt else "")
                    + "; staging cannot type the other values.",
                )
            )
        if "minLength" in c or "maxLength" in c:
            out.append(
                _expectation(
                    "expect_column_value_lengths_to_be_between",
                    {"column": name, "min_value": c.get("minLength"), "max_value": c.get("maxLength")},
                    name=f"{name}:length",
                    category="conformance",
                    severity="error",
                    description=f"{name} must be {_range_text(c.get('minLength'), c.get('maxLength'))}"
                    " characters long.",
                )
            )
        if "pattern" in c:
            out.append(
                _expectation(
                    "expect_column_values_to_be_null",
                    {"column": name + UNMATCHED_SUFFIX, "mostly": 1.0},
                    name=f"{name}:pattern",
                    category="conformance",
                    severity="error",
                    description=f"{name} must match the pattern {c['pattern']}.",
                )
            )
        if "enum" in c:
            column = name if field.type == "string" else name + VALUE_SUFFIX
            out.append(
                _expectation(
                    "expect_column_values_to_be_in_set",
                    {"column": column, "value_set": list(c["enum"]), "mostly": 1.0},
                    name=f"{name}:in_set",
                    category="conformance",
                    severity="error",
                    description=f"{name} must be one of {', '.join(map(str, c['enum']))}.",
                )
            )
        if field.type != "string" and ("minimum" in c or "maximum" in c):
            out.append(
                _expectation(
                    "expect_column_values_to_be_between",
                    {
                        "column": name + VALUE_SUFFIX,
                        "min_value": c.get("minimum"),
                        "max_value": c.get("maximum"),
                        "mostly": 1.0,
                    },
                    name=f"{name}:range",
                    category="plausibility",
                    severity="error",
                    description=f"{name} must be {_range_text(c.get('minimum'), c.get('maximum'))}.",
                )
            )
    for key in _unique_keys(schema):
        # GROUP BY, not GX's compound-unique expectation: GX counts copies with a window
        # function partitioned by the key, 2-3 times slower on 10 M rows (docs/quality.md).
        columns = ", ".join(quote_identifier(c) for c in key).replace("{", "{{").replace("}", "}}")
        out.append(
            _expectation(
                "unexpected_rows_expectation",
                {
                    "unexpected_rows_query": f"SELECT {columns}, count(*) AS copies FROM {{batch}} "
                    f"GROUP BY {columns} HAVING count(*) > 1"
                },
                name=f"{'+'.join(key)}:unique",
                category="conformance",
                severity="error",
                description=f"({', '.join(key)}) must identify one row: each value found is shared by "
                "several rows.",
                columns=list(key),
            )
        )
    return out


def _check_meta(schema: DatasetSchema, expectation: Expectation, where: str) -> None:
    meta = expectation.configuration.meta
    missing = [k for k in ("name", "category", "severity", "description") if not meta.get(k)]
    if missing:
        raise SuiteError(f"{where}: meta lacks {', '.join(missing)}.")
    if meta["category"] not in CATEGORIES or meta["severity"] not in SEVERITIES:
        raise SuiteError(f"{where}: category must be one of {CATEGORIES}, severity one of {SEVERITIES}.")
    unknown = [c for c in expectation_columns(expectation) if base_column(c) not in schema.column_names]
    if unknown:
        raise SuiteError(f"{where}: {schema.name} has no column {', '.join(unknown)}.")
    for column in expectation_columns(expectation):
        field = schema.field(base_column(column))
        if column.endswith((VALUE_SUFFIX, INVALID_SUFFIX)) and field.type == "string":
            raise SuiteError(f"{where}: {field.name} is a string; it has no {column[len(field.name) :]}.")
        if column.endswith(UNMATCHED_SUFFIX) and "pattern" not in field.constraints:
            raise SuiteError(f"{where}: {field.name} declares no pattern.")


def handwritten_expectations(schema: DatasetSchema, directory: Path | None = None) -> list[Expectation]:
    """The expectations of ``<directory>/<DATASET>.json``; none if the file does not exist.

    Refuses the file, rather than skipping an entry, if one expectation is not a
    valid GX configuration or lacks its meta: GX's own suite constructor drops
    invalid expectations with a log line, which would quietly disable a check.
    """
    from hdh_pipelines.quality._gx import ExpectationConfiguration

    path = (directory or expectations_dir()) / f"{schema.name}.json"
    if not path.exists():
        return []
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SuiteError(f"{path}: not a readable JSON file ({error}).") from error
    if document.get("name") != schema.name:
        raise SuiteError(f"{path}: the suite is named {document.get('name')!r}, not {schema.name!r}.")
    out = []
    for index, spec in enumerate(document.get("expectations", [])):
        where = f"{path} expectation {index} ({spec.get('meta', {}).get('name', spec.get('type'))})"
        try:
            expectation = ExpectationConfiguration(
                type=spec["type"], kwargs=spec.get("kwargs", {}), meta=spec.get("meta", {})
            ).to_domain_obj()
        except Exception as error:  # GX raises several types for a bad configuration
            raise SuiteError(f"{where}: not a valid expectation ({error}).") from error
        _check_meta(schema, expectation, where)
        out.append(expectation)
    return out


def _merge(generated: Iterable[Expectation], handwritten: Iterable[Expectation]) -> list[Expectation]:
    merged = {e.configuration.meta["name"]: e for e in generated}
    for expectation in handwritten:
        merged[expectation.configuration.meta["name"]] = expectation
    return list(merged.values())


def build_suite(schema: DatasetSchema, *, directory: Path | None = None) -> gx.ExpectationSuite:
    """The dataset's suite: generated expectations, then hand-written ones (which replace same-named ones)."""
    from hdh_pipelines.quality._gx import gx

    expectations = _merge(generated_expectations(schema), handwritten_expectations(schema, directory))
    names = [e.configuration.meta["name"] for e in expectations]
    if len(set(names)) != len(names):
        raise SuiteError(f"{schema.name}: two expectations share a name.")
    return gx.ExpectationSuite(name=f"raw.{schema.name}", expectations=expectations)


def raw_columns_sql(schema: DatasetSchema, columns: Iterable[str] | None = None) -> str:
    """SELECT list of the raw ``columns`` (default: all), the schema's ``missingValues`` made NULL.

    The raw loader already writes empty CSV fields as NULL; a Parquet delivery may
    still carry empty strings, which mean "missing" (Table Schema default ``[""]``).
    """
    missing = ", ".join(quote_literal(v) for v in schema.raw.get("missingValues", [""]))
    wanted = None if columns is None else set(columns)
    selected = []
    for field in schema.fields:
        if wanted is None or field.name in wanted:
            name = quote_identifier(field.name)
            selected.append(
                f"CASE WHEN {name} IN ({missing}) THEN NULL ELSE {name} END AS {name}" if missing else name
            )
    return ", ".join(selected)
