"""Validate a raw table (a list of Parquet files) with its Great Expectations suite, in DuckDB SQL.

The files never pass through pandas: each validation writes a throw-away DuckDB
database holding only views (``batch_table_<N>`` over each table's files, with
the derived columns its suite reads, and ``related_<DATASET>`` for the other
datasets cross-table expectations need), and GX's SQL engine queries it through
duckdb-engine. DuckDB streams the Parquet files under a memory cap and spills
to the scratch folder, so memory does not grow with the table.

The tables of one delivery share that database, one ephemeral GX context and
one GX data source (one connection): setting those up costs far more than
validating a small table (docs/performance.md, "Quality gate: fixed cost per
table"), and a delivery may hold dozens of tables. Each table is a query asset
(``SELECT * FROM batch_table_<N>``): a table asset would make GX reflect the
view's columns through DuckDB's ``pg_catalog``, about 0.2 s per table, where a
query asset reads the column names from a ``LIMIT 1`` query.

The report is plain data: one outcome per expectation with counts, threshold,
at most five example values (pseudonymised identifiers masked) and a sentence
saying what is wrong, so that the Dagster layer, a log line or the HTML page
all show the same thing.
"""

from __future__ import annotations

import contextlib
import html
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from hdh_pipelines.core.private_files import make_private_dir, write_private_file
from hdh_pipelines.core.sql import quote_identifier, quote_literal
from hdh_pipelines.quality.suites import (
    base_column,
    build_suite,
    column_sql,
    expectation_columns,
    identifier_columns,
    raw_columns_sql,
    read_columns,
)
from hdh_pipelines.registry import DatasetSchema, default_registry

if TYPE_CHECKING:
    # GX and SQLAlchemy cost seconds to import: the functions that validate import them, so that
    # loading the code location (which imports the report types here) does not pay for them.
    import sqlalchemy as sa

    from hdh_pipelines.quality._gx import Expectation, gx

BATCH_VIEW = "batch_table"
RELATED_VIEW_PREFIX = "related_"
SAMPLE_SIZE = 5
_HINTS = {
    "conformance": "Have the provider correct and redeliver, or correct the registry if the schema is wrong.",
    "completeness": "Ask the provider whether the values were lost in the extraction.",
    "plausibility": "Check the examples with the provider before the data is used.",
}


@dataclass(frozen=True)
class DuckDBSettings:
    """DuckDB's budget for one validation: memory is capped, larger work spills to scratch space."""

    memory_limit: str = "1GB"
    threads: int = 2
    scratch: Path | None = None


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result; ``success`` is None when it was not evaluated."""

    name: str
    expectation_type: str
    columns: tuple[str, ...]
    category: str
    severity: str
    success: bool | None
    evaluated: bool
    element_count: int | None
    unexpected_count: int | None
    unexpected_percent: float | None
    threshold: float
    # Delivered values (identifiers masked) and the query error, which may quote one: for the
    # owner-only report only. ``description`` is value-free and may be shown anywhere.
    sample_unexpected: tuple[str, ...]
    description: str
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.evaluated and self.success is False


@dataclass(frozen=True)
class ValidationReport:
    """A raw table's validation; ``success`` is False iff an ``error``-severity expectation failed."""

    dataset: str
    rows: int
    success: bool
    outcomes: tuple[ExpectationOutcome, ...]
    data_docs_path: Path | None = None

    @property
    def failures(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(o for o in self.outcomes if o.failed)

    @property
    def blocking_failures(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(o for o in self.failures if o.severity == "error")

    def outcome(self, name: str) -> ExpectationOutcome:
        for candidate in self.outcomes:
            if candidate.name == name:
                return candidate
        raise KeyError(f"{self.dataset} has no expectation named {name!r}.")

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["data_docs_path"] = None if self.data_docs_path is None else str(self.data_docs_path)
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ValidationReport:
        outcomes = tuple(
            ExpectationOutcome(
                **{**o, "columns": tuple(o["columns"]), "sample_unexpected": tuple(o["sample_unexpected"])}
            )
            for o in document["outcomes"]
        )
        docs = document.get("data_docs_path")
        return cls(
            dataset=document["dataset"],
            rows=document["rows"],
            success=document["success"],
            outcomes=outcomes,
            data_docs_path=None if docs is None else Path(docs),
        )


def mask(value: str) -> str:
    """A pseudonym cut to its first three characters and its length: enough to find it, not to reuse it."""
    shown = value[:3] if len(value) > 6 else ""
    return f"{shown}… ({len(value)} character{'s' if len(value) != 1 else ''})"


def _parquet_list(files: Sequence[Path]) -> str:
    if not files:
        raise ValueError("A raw table needs at least one Parquet file.")
    return "[" + ", ".join(quote_literal(str(Path(f).resolve())) for f in files) + "]"


def _related_views(related: Mapping[str, Sequence[Path]]) -> dict[str, str]:
    """Related dataset (registry name) -> the SELECT of its view."""
    views = {}
    for name, files in related.items():
        schema = default_registry().resolve(name)
        columns = raw_columns_sql(schema) if schema is not None else "*"
        key = schema.name if schema is not None else name
        views[key] = f"SELECT {columns} FROM read_parquet({_parquet_list(files)}, union_by_name = true)"
    return views


def _connection_config(settings: DuckDBSettings, scratch: Path) -> dict[str, Any]:
    return {
        "memory_limit": settings.memory_limit,
        "threads": settings.threads,
        "temp_directory": str(scratch),
        # Never download an extension: nothing may leave the machine.
        "autoinstall_known_extensions": False,
    }


@dataclass(frozen=True)
class RawTable:
    """A raw table to validate: its dataset, its Parquet files and the suite to run on them."""

    schema: DatasetSchema
    files: Sequence[Path]
    suite: gx.ExpectationSuite


def _batch_view(index: int) -> str:
    return f"{BATCH_VIEW}_{index}"


def _write_views(
    database: Path,
    tables: Sequence[tuple[RawTable, Sequence[str]]],
    related: Mapping[str, str],
) -> list[int]:
    """Create the views GX reads, one per table (with its ``columns``); return each table's row count."""
    counts = []
    with duckdb.connect(str(database), config={"autoinstall_known_extensions": False}) as connection:
        for name, select in related.items():
            connection.execute(f"CREATE VIEW {quote_identifier(RELATED_VIEW_PREFIX + name)} AS {select}")
        for index, (table, columns) in enumerate(tables):
            schema = table.schema
            raw = [c for c in columns if base_column(c) == c] or [schema.fields[0].name]
            derived = "".join(
                f", {column_sql(schema, c)} AS {quote_identifier(c)}" for c in columns if c not in raw
            )
            view = _batch_view(index)
            connection.execute(
                f"CREATE VIEW {view} AS SELECT *{derived} FROM (SELECT {raw_columns_sql(schema, raw)} "
                f"FROM read_parquet({_parquet_list(table.files)}, union_by_name = true)) AS raw"
            )
            counts.append(connection.execute(f"SELECT count(*) FROM {view}").fetchone()[0])
    return counts


def _validate(batch: Any, expectations: Sequence[Expectation], result_format: dict, parameters: dict) -> list:
    from hdh_pipelines.quality._gx import gx

    if not expectations:
        return []
    suite = gx.ExpectationSuite(name="pass", expectations=list(expectations))
    return list(batch.validate(suite, result_format=result_format, expectation_parameters=parameters).results)


def _end_failed_transaction(context: sa.engine.ExceptionContext) -> None:
    """Roll DuckDB back after a failed query, so that one broken expectation does not fail all later ones.

    GX keeps one connection and one transaction for the whole validation; after
    an error DuckDB refuses every statement of that transaction ("Current
    transaction is aborted"), and GX does not roll back.
    """
    if context.connection is not None:
        with contextlib.suppress(duckdb.Error):
            context.connection.connection.dbapi_connection.rollback()


@contextlib.contextmanager
def _duckdb_datasource(database: Path, config: Mapping[str, Any]) -> Iterator[Any]:
    """One ephemeral GX context and one SQL data source over ``database``, for every table of a validation."""
    import sqlalchemy as sa

    from hdh_pipelines.quality._gx import ephemeral_context

    context = ephemeral_context()
    datasource = context.data_sources.add_sql(
        name=f"raw-{uuid.uuid4().hex}",
        connection_string=f"duckdb:///{database}",
        kwargs={"connect_args": {"read_only": True, "config": dict(config)}},
    )
    sa.event.listen(datasource.get_execution_engine().engine, "handle_error", _end_failed_transaction)
    try:
        yield datasource
    finally:
        engine = datasource.get_execution_engine()
        connection = getattr(engine, "_connection", None)  # the persisted connection (see _gx)
        if connection is not None:
            connection.close()
        engine.close()
        datasource.get_engine().dispose()


def _run(
    datasource: Any,
    view: str,
    expectations: Sequence[Expectation],
    parameters: Mapping[str, Any],
) -> dict[str, Any]:
    """Validate ``view`` of the data source's database with GX; return expectation name -> GX result.

    Column expectations run twice, the second time only where it matters. The
    first pass asks GX for success only: it then computes nothing but the
    counts, bundled into one aggregate query per table. Those that failed, or
    tolerate some unexpected values (``mostly`` < 1), run again for their
    counts and examples: GX looks for examples with one query per expectation,
    and on a clean column that query reads the whole column to find nothing.
    SQL expectations fetch their rows (at most 200) anyway, so they run once,
    keeping them.
    """
    if not expectations:
        return {}
    parameters = dict(parameters)
    sql = [e for e in expectations if e.expectation_type == "unexpected_rows_expectation"]
    columnar = [e for e in expectations if e.expectation_type != "unexpected_rows_expectation"]
    # A batch request straight from the asset: a batch definition would be saved into the context.
    asset = datasource.add_query_asset(name=view, query=f"SELECT * FROM {view}")
    batch = asset.get_batch(asset.build_batch_request())
    decided = _validate(batch, columnar, {"result_format": "BOOLEAN_ONLY"}, parameters)
    results = {r.expectation_config.meta["name"]: r for r in decided}
    recount = [
        e
        for e in columnar
        if _exception(results[e.meta["name"]]) is None
        and (not results[e.meta["name"]].success or getattr(e, "mostly", 1.0) < 1)
    ]
    examples = {"result_format": "BASIC", "partial_unexpected_count": SAMPLE_SIZE}
    for result in _validate(batch, recount, examples, parameters) + _validate(
        batch, sql, {"result_format": "COMPLETE"}, parameters
    ):
        results[result.expectation_config.meta["name"]] = result
    return results


def _exception(result: Any) -> str | None:
    info = result.exception_info or {}
    nested = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for entry in nested:
        if entry.get("raised_exception"):
            return str(entry.get("exception_message") or "unknown error")
    return None


def _sample(values: Sequence[Any], columns: Sequence[str], identifiers: frozenset[str]) -> tuple[str, ...]:
    masked_columns = {c for c in columns if base_column(c) in identifiers}

    def show(value: Any, column: str | None) -> str:
        if isinstance(value, Mapping):
            return ", ".join(f"{k}={show(v, k)}" for k, v in value.items())
        text = "NULL" if value is None else str(value)
        hidden = column in identifiers if column is not None else bool(masked_columns)
        return mask(text) if hidden and value is not None else text

    return tuple(show(v, None) for v in list(values)[:SAMPLE_SIZE])


def _percent(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g} %"


def _count(outcome: ExpectationOutcome) -> str:
    if outcome.unexpected_count is None:
        return ""
    return f"{outcome.unexpected_count:,} ({_percent(outcome.unexpected_percent)})"


def _describe(outcome: ExpectationOutcome, what: str, missing: Sequence[str]) -> str:
    """What happened, in counts and names only: never an example or the query's error text."""
    if not outcome.evaluated:
        return f"Not evaluated: {what} It needs {', '.join(missing)}, which was not given to this validation."
    if outcome.error is not None:
        return (
            "Could not be evaluated (its query failed; the error is in the owner-only report); "
            f"fix the expectation. {what}"
        )
    if outcome.success:
        return f"Holds: {what}"
    allowed = _percent((1 - outcome.threshold) * 100)
    examples = " Examples are in the owner-only report." if outcome.sample_unexpected else ""
    return (
        f"Failed ({outcome.severity}): {what} Found {outcome.unexpected_count:,} "
        f"({_percent(outcome.unexpected_percent)} of {outcome.element_count:,} rows); "
        f"at most {allowed} allowed.{examples} {_HINTS[outcome.category]}"
    )


def _outcome(
    expectation: Any,
    result: Any | None,
    rows: int,
    identifiers: frozenset[str],
    missing: Sequence[str] = (),
) -> ExpectationOutcome:
    config = expectation.configuration if result is None else result.expectation_config
    meta, kwargs = config.meta, config.kwargs
    columns = tuple(dict.fromkeys(base_column(c) for c in expectation_columns(expectation)))
    error = _exception(result) if result is not None else None
    payload = (result.result if result is not None else None) or {}
    if config.type == "unexpected_rows_expectation":
        unexpected = payload.get("observed_value")
        element, values = rows, payload.get("details", {}).get("unexpected_rows", [])
        percent = None if unexpected is None or not rows else 100 * unexpected / rows
    elif result is not None and result.success and "unexpected_count" not in payload:
        element, unexpected, percent, values = rows, 0, 0.0, []  # passed the success-only pass at mostly 1
    else:
        element, unexpected = payload.get("element_count"), payload.get("unexpected_count")
        percent, values = payload.get("unexpected_percent"), payload.get("partial_unexpected_list", [])
    outcome = ExpectationOutcome(
        name=meta["name"],
        expectation_type=config.type,
        columns=columns,
        category=meta["category"],
        severity=meta["severity"],
        success=None if result is None else bool(result.success) and error is None,
        evaluated=result is not None,
        element_count=element,
        unexpected_count=unexpected,
        unexpected_percent=percent,
        threshold=float(kwargs.get("mostly", 1.0)),
        sample_unexpected=_sample(values or [], expectation_columns(expectation), identifiers),
        description="",
        error=error,
    )
    return replace(outcome, description=_describe(outcome, meta["description"], missing))


def validate_table(
    schema: DatasetSchema,
    files: Sequence[Path],
    *,
    related: Mapping[str, Sequence[Path]] | None = None,
    docs_dir: Path | None = None,
    suite: gx.ExpectationSuite | None = None,
    as_of: date | None = None,
    settings: DuckDBSettings | None = None,
) -> ValidationReport:
    """Validate one raw table (its Parquet ``files``) against ``suite`` (default: ``build_suite(schema)``).

    ``related``, ``docs_dir``, ``as_of`` and ``settings`` as for ``validate_tables``.
    """
    table = RawTable(schema, files, suite or build_suite(schema))
    reports = validate_tables([table], related=related, docs_dir=docs_dir, as_of=as_of, settings=settings)
    return reports[schema.name]


def validate_tables(
    tables: Sequence[RawTable],
    *,
    related: Mapping[str, Sequence[Path]] | None = None,
    docs_dir: Path | None = None,
    as_of: date | None = None,
    settings: DuckDBSettings | None = None,
) -> dict[str, ValidationReport]:
    """Validate raw tables of distinct datasets, each against its suite; dataset -> report.

    ``related`` maps other datasets (registry or delivered names) to their files,
    for cross-table expectations (``meta.related``); an expectation whose
    dataset is absent is reported as not evaluated, not failed. ``as_of`` is the
    day plausibility checks take as today (suite parameters ``today``,
    ``current_year``, ``now``). With ``docs_dir``, an HTML page of each report
    is written there (masked samples, no external resources).
    """
    settings = settings or DuckDBSettings()
    related_views = _related_views(related or {})
    moment = datetime.combine(as_of, datetime.min.time(), UTC) if as_of else datetime.now(UTC)
    parameters = {
        "today": moment.date().isoformat(),
        "current_year": moment.year,
        "now": moment.strftime("%Y-%m-%d %H:%M:%S"),
    }
    plans = []  # per table: (expectation, related datasets it misses) to run, and to skip
    for table in tables:
        runnable, skipped = [], []
        for expectation in table.suite.expectations:
            missing = [n for n in expectation.meta.get("related", []) if n not in related_views]
            (skipped if missing else runnable).append((expectation, missing))
        plans.append((runnable, skipped))
    with tempfile.TemporaryDirectory(prefix="hdh-quality-", dir=settings.scratch) as scratch:
        database = Path(scratch) / "views.duckdb"
        views = [
            (table, read_columns(e for e, _ in runnable))
            for table, (runnable, _) in zip(tables, plans, strict=True)
        ]
        rows = _write_views(database, views, related_views)
        with _duckdb_datasource(database, _connection_config(settings, Path(scratch))) as datasource:
            results = [
                _run(datasource, _batch_view(index), [e for e, _ in runnable], parameters)
                for index, (runnable, _) in enumerate(plans)
            ]
    reports = {}
    for table, (runnable, skipped), count, by_name in zip(tables, plans, rows, results, strict=True):
        identifiers = identifier_columns(table.schema)
        outcomes = [_outcome(e, by_name[e.meta["name"]], count, identifiers) for e, _ in runnable] + [
            _outcome(e, None, count, identifiers, missing) for e, missing in skipped
        ]
        report = ValidationReport(
            dataset=table.schema.name,
            rows=count,
            success=not any(o.failed and o.severity == "error" for o in outcomes),
            outcomes=tuple(outcomes),
        )
        if docs_dir is not None:
            report = replace(report, data_docs_path=write_html(report, docs_dir))
        reports[table.schema.name] = report
    return reports


def write_html(report: ValidationReport, docs_dir: Path) -> Path:
    """Write a self-contained HTML page of ``report`` into ``docs_dir``; return its path.

    Not GX Data Docs: those print unexpected values unmasked and load styles and
    scripts from eight outside hosts, which a browser in the secure environment
    would contact. This page shows only what the report holds (masked samples),
    escaped, with no script and no external resource. It holds delivered values,
    so its folder is 0700 and the page 0600 from their first byte.
    """
    make_private_dir(docs_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = docs_dir / f"{report.dataset}-{stamp}.html"
    status = {True: "passed", False: "FAILED", None: "not evaluated"}
    rows = "".join(
        "<tr class='{cls}'><td>{name}</td><td>{category}</td><td>{severity}</td><td>{status}</td>"
        "<td>{count}</td><td>{threshold}</td><td>{sample}</td><td>{description}</td></tr>".format(
            cls="failed" if o.failed else "",
            name=html.escape(o.name),
            category=html.escape(o.category),
            severity=html.escape(o.severity),
            status=status[o.success],
            count=""
            if o.unexpected_count is None
            else f"{o.unexpected_count:,} ({_percent(o.unexpected_percent)})",
            threshold=f"mostly {o.threshold:g}",
            sample=html.escape("; ".join(o.sample_unexpected)),
            description=html.escape(o.description + (f" Error: {o.error}" if o.error else "")),
        )
        for o in report.outcomes
    )
    verdict = "passed" if report.success else "FAILED: an error-severity expectation failed"
    write_private_file(
        path,
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Quality of {html.escape(report.dataset)}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px;vertical-align:top}tr.failed{background:#fdd}"
        "</style></head><body>"
        f"<h1>{html.escape(report.dataset)}: {verdict}</h1>"
        f"<p>{report.rows:,} rows, {len(report.outcomes)} expectations, {len(report.failures)} failed.</p>"
        "<table><tr><th>expectation</th><th>category</th><th>severity</th><th>status</th>"
        "<th>unexpected</th><th>threshold</th><th>examples (identifiers masked)</th><th>description</th></tr>"
        f"{rows}</table></body></html>".encode(),
    )
    return path
