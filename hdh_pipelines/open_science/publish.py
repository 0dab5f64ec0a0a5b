"""Publishing protected tables: indicator outputs with their request log, and the open dataset.

Every output folder is written under a temporary name beside its final one and
renamed into place, so a failed run leaves the previous version (or nothing)
visible, and a re-run replaces it whole. Only protected tables reach these
files: no count from 1 to threshold − 1 is written anywhere, log included.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from hdh_pipelines.core.disclosure import DISCLOSURE_THRESHOLD
from hdh_pipelines.core.private_files import PRIVATE_FILE_MODE, make_private_dir
from hdh_pipelines.normalisation.warehouse import Warehouse
from hdh_pipelines.open_science.disclosure import (
    DOMINANCE_CONTRIBUTORS,
    DOMINANCE_SHARE,
    PROTECTION_WIDTH,
    TOTAL,
    ProtectedTable,
    protect_counts,
)
from hdh_pipelines.open_science.errors import OpenDataRefused
from hdh_pipelines.open_science.geography import DEPARTEMENT_REGION, REGION_NAMES, UNKNOWN, departement_sql
from hdh_pipelines.open_science.indicators import (
    IndicatorSpec,
    compute_indicator,
    dominance_sql,
    full_grid,
    margin_grouping_sets,
    protect_indicator,
    spec_from_definition,
)

OPEN_LICENCE = {
    "identifier": "etalab-2.0",
    "title": "Licence Ouverte / Open Licence version 2.0",
    "url": "https://www.etalab.gouv.fr/licence-ouverte-open-licence/",
}
OPEN_DISPENSATIONS = "dispensations_atc_year_region"
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# ATC levels as code lengths: 1 anatomical group (A), 2 therapeutic subgroup (A10), 3 pharmacological
# subgroup (A10B), 4 chemical subgroup (A10BA), 5 substance (A10BA02).
ATC_LEVEL_LENGTHS = {1: 1, 2: 3, 3: 4, 4: 5, 5: 7}


def replace_folder(target: Path, write: Callable[[Path], None], private: bool) -> None:
    """Write a folder's content with ``write(staging)`` and swap it in with renames."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)  # a killed run's staging folder
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    staging.mkdir()
    try:
        write(staging)
        if private:
            make_private_dir(staging)
            for path in staging.iterdir():
                os.chmod(path, PRIVATE_FILE_MODE)
        aside = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        if target.exists():
            os.rename(target, aside)
        os.rename(staging, target)
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def append_log_record(log_path: Path, record: dict) -> None:
    """Append one JSON line to an owner-only, append-only log (O_APPEND: writers never interleave)."""
    make_private_dir(log_path.parent)
    line = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    descriptor = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        os.write(descriptor, line)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_log(log_path: Path) -> list[dict]:
    if not log_path.exists():
        return []
    return [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line]


def data_versions(connection: duckdb.DuckDBPyConnection, warehouse: Warehouse, tables: Sequence[str]) -> dict:
    """What the output was computed from: the warehouse's state, input row counts, algorithm versions."""
    state = warehouse.state()
    versions: dict = {
        "warehouse": state.name,
        "warehouse_engine": state.engine,
        "warehouse_modified_at": state.modified_at.astimezone().isoformat(timespec="seconds"),
        "tables": {},
    }
    for table in tables:
        # Row counts are of whole tables (thousands to millions), never of a published cell.
        versions["tables"][table] = connection.execute(f"select count(*) from {table}").fetchall()[0][0]
        if table.startswith("algorithms."):
            versions.setdefault("algorithm_versions", {})[table] = sorted(
                row[0]
                for row in connection.execute(f"select distinct algorithm_version from {table}").fetchall()
            )
    return versions


def _indicator_inputs(spec: IndicatorSpec) -> list[str]:
    inputs = ["marts.hospital_stays"] if spec.unit == "stays" or spec.icd10_prefixes else ["marts.persons"]
    if spec.atc_prefixes:
        inputs.append("marts.drug_dispensations")
    if spec.algorithm:
        inputs.append(f"algorithms.{spec.algorithm}")
    return inputs


@dataclass(frozen=True)
class IndicatorResult:
    spec: IndicatorSpec
    protected: ProtectedTable
    folder: Path
    metadata: dict


def run_indicator(
    connection: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    spec: IndicatorSpec,
    output_root: Path,
    log_path: Path,
    *,
    request_id: str,
    requester: str,
    now: datetime,
) -> IndicatorResult:
    """Compute, protect and publish one indicator (CSV + JSON under ``<root>/<name>/<request_id>/``) from
    ``connection``, ``warehouse`` opened read-only.

    The request is logged either way.
    """
    # One folder per request: a request never replaces what another one published.
    if not _REQUEST_ID.fullmatch(request_id):
        raise ValueError("request_id must be 1-64 letters, digits, '_' or '-' (a Dagster run id).")
    record = {
        "request_id": request_id,
        "requester": requester,
        "requested_at": now.isoformat(timespec="seconds"),
    }
    try:
        spec.validate()
        versions = data_versions(connection, warehouse, _indicator_inputs(spec))
        history = published_history(read_log(log_path), spec, versions)
        protected = protect_indicator(compute_indicator(connection, spec), spec, history)
    except OpenDataRefused as refusal:
        append_log_record(
            log_path, {**record, "definition": spec.definition(), "outcome": "refused", **refusal.as_dict()}
        )
        raise
    metadata = {
        "indicator": spec.name,
        "definition": spec.definition(),
        "data_versions": versions,
        "computed_at": now.isoformat(timespec="seconds"),
        "request_id": request_id,
        **_suppression_metadata(protected),
        "columns": _indicator_columns(spec),
        "region_names": REGION_NAMES,
    }
    folder = output_root / spec.name / request_id
    replace_folder(
        folder, lambda staging: _write_indicator(staging, spec.name, protected, metadata), private=False
    )
    append_log_record(
        log_path,
        {
            **record,
            "definition": spec.definition(),
            "outcome": "published",
            "population": spec.population(),
            "output": str(folder),
            "data_versions": versions,
            **_suppression_metadata(protected),
            # The published table itself, as readers hold it (hidden values null): the audit of every later
            # request of the population includes it.
            "result": json.loads(protected.table.to_json(orient="records")),
        },
    )
    return IndicatorResult(spec, protected, folder, metadata)


def _history_key(versions: dict) -> str:
    """The data a table was computed from, as far as a reader's differencing goes: input row counts and
    algorithm versions (not the warehouse file's time, which every rebuild changes)."""
    return json.dumps(
        {key: value for key, value in versions.items() if key in ("tables", "algorithm_versions")},
        sort_keys=True,
    )


def published_history(
    records: Sequence[dict], spec: IndicatorSpec, versions: dict
) -> list[tuple[IndicatorSpec, pd.DataFrame]]:
    """The tables already published for ``spec``'s population from the same data, each once."""
    history: dict[str, tuple[IndicatorSpec, pd.DataFrame]] = {}
    for record in records:
        if record.get("outcome") != "published" or record.get("population") != spec.population():
            continue
        if _history_key(record["data_versions"]) != _history_key(versions):
            continue
        previous = spec_from_definition(record["definition"])
        table = pd.DataFrame.from_records(record["result"])
        table["count"] = table["count"].astype("Int64")
        for name in previous.breakdown:
            table[name] = table[name].astype(str)
        key = json.dumps(
            [previous.breakdown, previous.year_from, previous.year_to, previous.age_bands, record["result"]]
        )
        history.setdefault(key, (previous, table))
    return list(history.values())


def _suppression_metadata(protected: ProtectedTable) -> dict:
    # What was hidden and why in general, never which value is sensitive: that would narrow it.
    return {
        "suppression": {
            "threshold": protected.threshold,
            "rule": "a value with fewer distinct persons than the threshold, or whose "
            f"{DOMINANCE_CONTRIBUTORS} largest contributors hold more than {DOMINANCE_SHARE:.0%} of it "
            "(stays, dispensations, boxes), is hidden; more values are hidden until no hidden value's "
            f"feasible range, given everything published for the population, is narrower than "
            f"{PROTECTION_WIDTH}; zeros are shown",
            "protection_width": PROTECTION_WIDTH,
            "suppressed_values": protected.suppressed,
            "published_values": protected.published_values,
        }
    }


def _indicator_columns(spec: IndicatorSpec) -> dict[str, str]:
    return {
        **{name: f"breakdown dimension '{name}' ('{TOTAL}' in a margin)" for name in spec.breakdown},
        "cell_type": "cell, row_total, column_total or grand_total; totals are sums of cells",
        "count": f"number of {spec.unit}; empty when suppressed",
    }


def _write_indicator(staging: Path, name: str, protected: ProtectedTable, metadata: dict) -> None:
    protected.table.to_csv(staging / f"{name}.csv", index=False)
    (staging / f"{name}.json").write_text(
        json.dumps(
            {"metadata": metadata, "table": json.loads(protected.table.to_json(orient="records"))},
            indent=2,
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )


def markdown_table(table: pd.DataFrame, limit: int = 40) -> str:
    """A readable preview: zero cells left out, suppressed values shown as ``[suppressed]``."""
    counts = table.select_dtypes("number")
    non_zero = table[(counts.isna() | (counts != 0)).any(axis=1)]
    shown = non_zero.head(limit).astype(object)
    shown = shown.where(non_zero.head(limit).notna(), "[suppressed]")
    buffer = io.StringIO()
    buffer.write("| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n")
    for row in shown.itertuples(index=False, name=None):
        buffer.write("| " + " | ".join(str(value) for value in row) + " |\n")
    hidden = len(non_zero) - len(shown)
    buffer.write(f"\n{len(table) - len(non_zero)} zero cells not shown")
    buffer.write(f"; {hidden} more rows in the CSV.\n" if hidden else ".\n")
    return buffer.getvalue()


# ---------------------------------------------------------------- open data


def build_open_dispensations(
    connection: duckdb.DuckDBPyConnection, atc_level: int = 2, threshold: int = DISCLOSURE_THRESHOLD
) -> ProtectedTable:
    """Patients, dispensations and boxes by ATC class × year × région, every value held to its distinct
    persons, dispensations and boxes also to the dominance rule."""
    if atc_level not in ATC_LEVEL_LENGTHS:
        raise OpenDataRefused("invalid_atc_level", "The ATC level is 1 to 5.", field="atc_level")
    geography = pd.DataFrame(
        {"departement": list(DEPARTEMENT_REGION), "region": list(DEPARTEMENT_REGION.values())}
    )
    dimensions = ["atc_class", "year", "region"]
    connection.register("hdh_geography", geography)
    try:
        observed = connection.sql(
            f"""
            with lines as (
                select substr(d.atc_code, 1, {ATC_LEVEL_LENGTHS[atc_level]}) as atc_class,
                       cast(year(d.dispensing_date) as varchar) as year,
                       coalesce(g.region, '{UNKNOWN}') as region,
                       d.ben_idt_ano as person, d.boxes
                from marts.drug_dispensations d
                join marts.persons p using (ben_idt_ano)
                left join hdh_geography g on g.departement = {departement_sql("p.residence_departement")}
                where d.atc_code is not null and not d.is_for_information_only and d.boxes > 0
            ),
            contributions as (
                select atc_class, year, region, person, count(*) as dispensations, sum(boxes) as boxes
                from lines group by grouping sets ({margin_grouping_sets(dimensions, ["person"])})
            )
            select {", ".join(f"coalesce({name}, '{TOTAL}') as {name}" for name in dimensions)},
                   count(*) as patients, count(*) as persons,
                   sum(dispensations)::bigint as dispensations, sum(boxes)::bigint as boxes,
                   {dominance_sql("dispensations")} or {dominance_sql("boxes")} as dominated
            from contributions group by {", ".join(dimensions)}
            """
        ).df()
    except duckdb.CatalogException as error:
        raise OpenDataRefused(
            "missing_input",
            f"The warehouse lacks an input ({str(error).splitlines()[0]}): materialise the marts first.",
        ) from None
    finally:
        connection.unregister("hdh_geography")
    cells = observed[(observed[dimensions] != TOTAL).all(axis=1)]
    if cells.empty:
        raise OpenDataRefused("empty_table", "No dispensation with an ATC class: nothing to publish.")
    domains = {
        "atc_class": sorted(set(cells["atc_class"])),
        "year": sorted(set(cells["year"])),
        "region": list(REGION_NAMES) + sorted(set(cells["region"]) - set(REGION_NAMES)),
    }
    return protect_counts(
        full_grid(observed, domains, ["patients", "dispensations", "boxes"]),
        dimensions,
        "patients",
        ("dispensations", "boxes"),
        threshold=threshold,
    )


def publish_open_dispensations(
    connection: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    public_root: Path,
    *,
    now: datetime,
    atc_level: int = 2,
    threshold: int = DISCLOSURE_THRESHOLD,
) -> tuple[ProtectedTable, Path, dict]:
    """Write the open dataset (CSV, Parquet, metadata.json and open licence) to ``<public root>/<name>/``."""
    protected = build_open_dispensations(connection, atc_level, threshold)
    years = sorted(set(protected.table["year"]) - {"Total"})
    metadata = {
        "identifier": OPEN_DISPENSATIONS,
        "title": "Médicaments remboursés par classe ATC, année et région",
        "description": "Patients (distinct persons with at least one dispensing), dispensations and boxes of "
        f"reimbursed drugs by ATC class (level {atc_level}), calendar year and région of residence. Values "
        f"behind fewer than {threshold} patients, or dominated by two patients, are suppressed with "
        "complements chosen so that no suppressed value can be narrowed from the rest; totals are sums of "
        "the cells, so a patient in two classes or years counts in both.",
        "license": OPEN_LICENCE,
        "issued": now.isoformat(timespec="seconds"),
        "temporal": {"start": years[0], "end": years[-1]} if years else None,
        "spatial": "France (régions, INSEE code 2016)",
        "publisher": "Health Data Hub",
        "distributions": [
            {"file": f"{OPEN_DISPENSATIONS}.csv", "media_type": "text/csv"},
            {"file": f"{OPEN_DISPENSATIONS}.parquet", "media_type": "application/vnd.apache.parquet"},
        ],
        "columns": {
            "atc_class": "ATC class ('Total' in a margin)",
            "year": "calendar year of dispensing ('Total' in a margin)",
            "region": "région of residence, INSEE code, or 'unknown' ('Total' in a margin)",
            "cell_type": "cell, row_total (all régions), column_total (all classes and years) or grand_total",
            "patients": "distinct persons dispensed the class; empty when suppressed",
            "dispensations": "dispensing lines; suppressed with patients",
            "boxes": "boxes dispensed; suppressed with patients",
        },
        "region_names": REGION_NAMES,
        "data_versions": data_versions(connection, warehouse, ["marts.drug_dispensations", "marts.persons"]),
        **_suppression_metadata(protected),
    }
    folder = public_root / OPEN_DISPENSATIONS

    def write(staging: Path) -> None:
        protected.table.to_csv(staging / f"{OPEN_DISPENSATIONS}.csv", index=False)
        protected.table.to_parquet(staging / f"{OPEN_DISPENSATIONS}.parquet", index=False)
        (staging / "metadata.json").write_text(
            json.dumps(metadata, indent=2, ensure_ascii=False), encoding="utf-8"
        )

    replace_folder(folder, write, private=False)
    return protected, folder, metadata
