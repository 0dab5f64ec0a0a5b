"""Aggregate statistics of a dataset, computed in DuckDB SQL; no row-level value ever leaves the query.

Every figure that could single out people is held to ``DISCLOSURE_THRESHOLD``
(the hub's one threshold, ``hdh_pipelines.open_science.disclosure.DISCLOSURE_THRESHOLD``), counted
in distinct persons whatever the figure counts, as for published tables:
- the individual count is withheld (None) under the threshold; the record
  count too, and also when the dominance rule holds (the
  ``DOMINANCE_CONTRIBUTORS`` persons with most records hold more than
  ``DOMINANCE_SHARE`` of them);
- temporal coverage runs from the first to the last *month* holding at least
  that many distinct persons (so an outlier date is never published), as month
  bounds;
- the typical ages are the ages below and above which at least that many
  individuals (or records, without a person key) and at least 5 % of them lie.
Without a person key, each record counts as a person.
Raw tables are text as delivered: values are cast with TRY_CAST / strptime,
invalid ones and the SNDS missing-date sentinel count as missing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import duckdb

from hdh_pipelines.catalogue.model import DatasetDescription, DatasetStatistics, Delivery
from hdh_pipelines.catalogue.sources import age_column
from hdh_pipelines.core.disclosure import DISCLOSURE_THRESHOLD
from hdh_pipelines.core.sql import quote_identifier, quote_literal
from hdh_pipelines.normalisation.warehouse import Warehouse, has_relation
from hdh_pipelines.open_science.indicators import dominance_sql
from hdh_pipelines.registry import DatasetRegistry, names_carry_year, year_in_name

TYPICAL_AGE_SHARE = 0.05
MAX_PLAUSIBLE_AGE = 130


def raw_table_files(raw_root: Path, registry: DatasetRegistry) -> dict[str, list[Path]]:
    """Registry dataset name -> its Parquet files (``<provider>/<delivery>/<DATASET>``)."""
    files: dict[str, list[Path]] = defaultdict(list)
    for folder in sorted(raw_root.glob("*/*/*/")):
        schema = registry.resolve(folder.name)
        if schema is not None:
            files[schema.name].extend(sorted(folder.glob("*.parquet")))
    return {name: paths for name, paths in files.items() if paths}


def delivered_years(
    schema_name: str, files: Sequence[Path], deliveries: Sequence[Delivery]
) -> tuple[int, ...]:
    """The years a table was seen in deliveries: of the delivered names for per-year tables (``T_MCO23B``
    is 2023, read from the ``hdh_dataset`` lineage column), else of the deliveries' load times."""
    if not names_carry_year(schema_name):
        return tuple(sorted({d.loaded_at.year for d in deliveries if d.loaded_at is not None}))
    with duckdb.connect() as connection:
        names = connection.execute(
            "SELECT DISTINCT hdh_dataset FROM read_parquet(?, union_by_name = true)",
            [[str(f) for f in files]],
        ).fetchall()
    years = {year_in_name(schema_name, name) for (name,) in names if name}
    return tuple(sorted(year for year in years if year is not None))


def _raw_date(description: DatasetDescription, registry: DatasetRegistry, column: str) -> str:
    field = registry.resolve(description.name).field(column)
    quoted = quote_identifier(column)
    if field.format:
        typed = f"try_strptime({quoted}, {quote_literal(field.format)})::DATE"
    else:
        typed = f"TRY_CAST({quoted} AS TIMESTAMP)::DATE"
    missing = registry.resolve(description.name).raw.get("hdh", {}).get("missing_date")
    return f"NULLIF({typed}, DATE {quote_literal(missing)})" if missing else typed


def _age_sql(description: DatasetDescription, date_sql: str | None, typed: bool, reference: date) -> str:
    column = age_column(description)
    if column is None:
        return "NULL"
    value = quote_identifier(column) if typed else f"TRY_CAST({quote_identifier(column)} AS INTEGER)"
    if "AGE" in column.upper():
        return value
    at_year = f"coalesce(year({date_sql}), {reference.year})" if date_sql else str(reference.year)
    return f"{at_year} - {value}"


def _person_sql(columns: Sequence[str]) -> str:
    if not columns:
        return "NULL"
    quoted = [quote_identifier(c) for c in columns]
    present = " AND ".join(f"{c} IS NOT NULL" for c in quoted)
    return f"CASE WHEN {present} THEN [{', '.join(f'{c}::VARCHAR' for c in quoted)}] END"


def _measure(
    connection: duckdb.DuckDBPyConnection, relation: str, person: str, event: str, age: str
) -> tuple:
    threshold, share = DISCLOSURE_THRESHOLD, TYPICAL_AGE_SHARE
    # A record without a person key is a person of its own (its row number).
    connection.execute(
        f"CREATE OR REPLACE TEMP VIEW catalogue_base AS "
        f"SELECT coalesce(person::VARCHAR, 'record ' || rowid::VARCHAR) AS unit, * EXCLUDE (rowid) FROM ("
        f"SELECT {person} AS person, {event} AS event_date, {age} AS age, row_number() OVER () AS rowid "
        f"FROM {relation})"
    )
    records, individuals, persons, dominated = connection.execute(
        f"""
        SELECT sum(records)::BIGINT, count(person), count(*), coalesce({dominance_sql("records")}, false)
        FROM (SELECT unit, any_value(person) AS person, count(*) AS records FROM catalogue_base GROUP BY unit)
        """
    ).fetchone()
    months = connection.execute(
        f"""
        SELECT min(month), max(month) FROM (
            SELECT date_trunc('month', event_date)::DATE AS month FROM catalogue_base
            WHERE event_date IS NOT NULL GROUP BY 1 HAVING count(DISTINCT unit) >= {threshold}
        )
        """
    ).fetchone()
    # Persons by age, then the ages with enough of them on each side.
    ages = connection.execute(
        f"""
        WITH units AS (
            SELECT DISTINCT unit, age FROM catalogue_base WHERE age BETWEEN 0 AND {MAX_PLAUSIBLE_AGE}
        ),
        by_age AS (SELECT age, count(*) AS n FROM units GROUP BY age),
        cumulated AS (
            SELECT age,
                   sum(n) OVER (ORDER BY age) AS at_or_below,
                   sum(n) OVER (ORDER BY age DESC) AS at_or_above,
                   sum(n) OVER () AS total
            FROM by_age
        )
        SELECT min(age) FILTER (WHERE at_or_below >= greatest({threshold}, ceil({share} * total))),
               max(age) FILTER (WHERE at_or_above >= greatest({threshold}, ceil({share} * total)))
        FROM cumulated
        """
    ).fetchone()
    return (records or 0), individuals, persons, bool(dominated), months, ages


def suppressed_count(count: int | None) -> int | None:
    return count if count is not None and count >= DISCLOSURE_THRESHOLD else None


def _statistics(measured: tuple, has_person: bool, deliveries: tuple[Delivery, ...]) -> DatasetStatistics:
    records, individuals, persons, dominated, (first_month, last_month), (min_age, max_age) = measured
    # The record count is held to the persons behind it (or its records, without a person key).
    records_hidden = records > 0 and (persons < DISCLOSURE_THRESHOLD or dominated)
    end = None
    if last_month is not None:
        following = (last_month.replace(day=28) + timedelta(days=4)).replace(day=1)
        end = following - timedelta(days=1)
    individuals = individuals if has_person else None
    return DatasetStatistics(
        records=None if records_hidden else records,
        individuals=suppressed_count(individuals),
        coverage_start=first_month,
        coverage_end=end,
        min_typical_age=min_age,
        max_typical_age=max_age,
        deliveries=deliveries,
        records_suppressed=records_hidden,
        individuals_suppressed=individuals is not None and 0 < individuals < DISCLOSURE_THRESHOLD,
    )


def _connect(memory_limit: str, scratch: Path | None) -> duckdb.DuckDBPyConnection:
    config = {"memory_limit": memory_limit, "threads": 2, "autoinstall_known_extensions": False}
    if scratch is not None:
        config["temp_directory"] = str(scratch)
    return duckdb.connect(config=config)


def raw_statistics(
    description: DatasetDescription,
    files: Sequence[Path],
    registry: DatasetRegistry,
    *,
    reference: date,
    memory_limit: str = "1GB",
    scratch: Path | None = None,
) -> DatasetStatistics:
    """Statistics of a raw table (its Parquet files); ``reference`` dates ages when there is no event date."""
    file_list = "[" + ", ".join(quote_literal(str(f)) for f in files) + "]"
    relation = f"read_parquet({file_list}, union_by_name = true)"
    event = _raw_date(description, registry, description.event_date) if description.event_date else None
    with _connect(memory_limit, scratch) as connection:
        measured = _measure(
            connection,
            relation,
            _person_sql(description.person_columns),
            event or "NULL::DATE",
            _age_sql(description, event, typed=False, reference=reference),
        )
        rows = connection.execute(
            f"SELECT hdh_provider, hdh_delivery_id, max(hdh_loaded_at) FROM {relation} "
            "GROUP BY ALL ORDER BY 3, 1, 2"
        ).fetchall()
    deliveries = tuple(Delivery(provider, delivery, loaded) for provider, delivery, loaded in rows)
    return _statistics(measured, bool(description.person_columns), deliveries)


def warehouse_statistics(
    description: DatasetDescription,
    warehouse: Warehouse,
    *,
    reference: date,
    memory_limit: str = "1GB",
    scratch: Path | None = None,
) -> DatasetStatistics | None:
    """Statistics of a warehouse table (either engine's), read-only; None when the table does not exist (not
    built yet)."""
    schema, table = description.relation.split(".", 1)
    with _connect(memory_limit, scratch) as connection:
        warehouse.attach(connection, "warehouse")
        if not has_relation(connection, "warehouse", description.relation):
            return None
        relation = f"warehouse.{quote_identifier(schema)}.{quote_identifier(table)}"
        event = quote_identifier(description.event_date) if description.event_date else None
        measured = _measure(
            connection,
            relation,
            _person_sql(description.person_columns),
            f"{event}::DATE" if event else "NULL::DATE",
            _age_sql(description, f"{event}::DATE" if event else None, typed=True, reference=reference),
        )
    return _statistics(measured, bool(description.person_columns), ())
