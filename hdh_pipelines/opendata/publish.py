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

from hdh_pipelines.opendata.disclosure import DEFAULT_THRESHOLD, ProtectedTable, protect_counts
from hdh_pipelines.opendata.errors import OpenDataRefused
from hdh_pipelines.opendata.geography import DEPARTEMENT_REGION, REGION_NAMES, UNKNOWN, departement_sql
from hdh_pipelines.opendata.indicators import IndicatorSpec, compute_indicator, protect_indicator
from hdh_pipelines.storage import PRIVATE_FILE_MODE, make_private_dir

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


def data_versions(connection: duckdb.DuckDBPyConnection, warehouse_path: Path, tables: Sequence[str]) -> dict:
    """What the output was computed from: the warehouse file's state, input row counts, algorithm versions."""
    stat = warehouse_path.stat()
    versions: dict = {
        "warehouse": warehouse_path.name,
        "warehouse_modified_at": datetime.fromtimestamp(stat.st_mtime)
        .astimezone()
        .isoformat(timespec="seconds"),
        "tables": {},
    }
    for table in tables:
        # Row counts are of whole tables (thousands to millions), never of a published cell.
        versions["tables"][table] = connection.execute(f"select count(*) from {table}").fetchone()[0]
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
    warehouse_path: Path,
    spec: IndicatorSpec,
    output_root: Path,
    log_path: Path,
    *,
    request_id: str,
    requester: str,
    now: datetime,
) -> IndicatorResult:
    """Compute, protect and publish one indicator (CSV + JSON under ``<root>/<name>/<request_id>/``).

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
        protected = protect_indicator(compute_indicator(connection, spec), spec)
        versions = data_versions(connection, warehouse_path, _indicator_inputs(spec))
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
            "output": str(folder),
            "data_versions": versions,
            **_suppression_metadata(protected),
            # The published table itself: suppressed values are null, so no small count enters the log.
            "result": json.loads(protected.table.to_json(orient="records")),
        },
    )
    return IndicatorResult(spec, protected, folder, metadata)


def _suppression_metadata(protected: ProtectedTable) -> dict:
    return {
        "suppression": {
            "threshold": protected.threshold,
            "rule": "values from 1 to threshold-1 suppressed (primary); complements suppressed so that no "
            "suppressed value can be recomputed from row, column or grand totals (secondary); zeros shown",
            "primary_suppressed": protected.primary,
            "secondary_suppressed": protected.secondary,
            "published_values": protected.published_values,
        }
    }


def _indicator_columns(spec: IndicatorSpec) -> dict[str, str]:
    return {
        **{name: f"breakdown dimension '{name}' ('Total' in a margin)" for name in spec.breakdown},
        "cell_type": "cell, row_total, column_total or grand_total; totals are sums of cells",
        "count": f"number of {spec.unit}; empty when suppressed",
        "suppression": "empty when published, 'primary' (below the threshold) or 'secondary' (complement)",
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
    connection: duckdb.DuckDBPyConnection, atc_level: int = 2, threshold: int = DEFAULT_THRESHOLD
) -> ProtectedTable:
    """Patients, dispensations and boxes by ATC class × year × région, suppressed on the patient count."""
    if atc_level not in ATC_LEVEL_LENGTHS:
        raise OpenDataRefused("invalid_atc_level", "The ATC level is 1 to 5.", field="atc_level")
    if threshold < DEFAULT_THRESHOLD:
        raise OpenDataRefused(
            "invalid_threshold", f"The threshold cannot be below {DEFAULT_THRESHOLD}.", field="threshold"
        )
    geography = pd.DataFrame(
        {"departement": list(DEPARTEMENT_REGION), "region": list(DEPARTEMENT_REGION.values())}
    )
    connection.register("hdh_geography", geography)
    try:
        observed = connection.sql(
            f"""
            select substr(d.atc_code, 1, {ATC_LEVEL_LENGTHS[atc_level]}) as atc_class,
                   cast(year(d.dispensing_date) as varchar) as year,
                   coalesce(g.region, '{UNKNOWN}') as region,
                   count(distinct d.ben_idt_ano) as patients,
                   count(*) as dispensations,
                   sum(d.boxes) as boxes
            from marts.drug_dispensations d
            join marts.persons p using (ben_idt_ano)
            left join hdh_geography g on g.departement = {departement_sql("p.residence_departement")}
            where d.atc_code is not null and not d.is_for_information_only and d.boxes > 0
            group by all
            """
        ).df()
    except duckdb.CatalogException as error:
        raise OpenDataRefused(
            "missing_input",
            f"The warehouse lacks an input ({str(error).splitlines()[0]}): materialise the marts first.",
        ) from None
    finally:
        connection.unregister("hdh_geography")
    if observed.empty:
        raise OpenDataRefused("empty_table", "No dispensation with an ATC class: nothing to publish.")
    regions = list(REGION_NAMES) + sorted(set(observed["region"]) - set(REGION_NAMES))
    # Every class × year × région, zero cells explicit.
    grid = pd.MultiIndex.from_product(
        [sorted(set(observed["atc_class"])), sorted(set(observed["year"])), regions],
        names=["atc_class", "year", "region"],
    )
    cells = observed.set_index(list(grid.names)).reindex(grid, fill_value=0).astype("int64").reset_index()
    return protect_counts(
        cells, ["atc_class", "year", "region"], "patients", threshold, ("dispensations", "boxes")
    )


def publish_open_dispensations(
    connection: duckdb.DuckDBPyConnection,
    warehouse_path: Path,
    public_root: Path,
    *,
    now: datetime,
    atc_level: int = 2,
    threshold: int = DEFAULT_THRESHOLD,
) -> tuple[ProtectedTable, Path, dict]:
    """Write the open dataset (CSV, Parquet, metadata.json and open licence) to ``<public root>/<name>/``."""
    protected = build_open_dispensations(connection, atc_level, threshold)
    years = sorted(set(protected.table["year"]) - {"Total"})
    metadata = {
        "identifier": OPEN_DISPENSATIONS,
        "title": "Médicaments remboursés par classe ATC, année et région",
        "description": "Patients (distinct persons with at least one dispensing), dispensations and boxes of "
        f"reimbursed drugs by ATC class (level {atc_level}), calendar year and région of residence. Values "
        f"from 1 to {threshold - 1} patients are suppressed with their complements (secondary suppression); "
        "totals are sums of the cells, so a patient in two classes or years counts in both.",
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
            "suppression": "empty, 'primary' or 'secondary'",
        },
        "region_names": REGION_NAMES,
        "data_versions": data_versions(
            connection, warehouse_path, ["marts.drug_dispensations", "marts.persons"]
        ),
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
