"""Descriptions and statistics of the open datasets published in the public open-data folder.

Each open dataset is a folder ``<open data dir>/<name>/`` holding its files and
a ``metadata.json`` written by ``hdh_pipelines.open_science.publish`` (title,
description, licence, distributions, columns, temporal coverage, inputs). The
data are aggregates already protected by disclosure control; the catalogue
adds only the table's row count (itself held to the threshold) and the years
covered, never a value from the table.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb

from hdh_pipelines.catalogue.model import (
    DatasetDescription,
    DatasetStatistics,
    DistributionFile,
    Layer,
    OpenLicence,
    Variable,
)
from hdh_pipelines.catalogue.nomenclatures import codes_of
from hdh_pipelines.catalogue.shacl import AccessLevel
from hdh_pipelines.catalogue.sources import CatalogueSourceError
from hdh_pipelines.catalogue.statistics import suppressed_count
from hdh_pipelines.core.disclosure import DISCLOSURE_THRESHOLD
from hdh_pipelines.core.sql import quote_literal

METADATA_FILE = "metadata.json"
_REQUIRED = ("identifier", "title", "description", "license", "distributions", "columns")


def open_data_identifier(name: str) -> str:
    return f"open_data/{name}"


def _read_metadata(path: Path) -> dict:
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CatalogueSourceError(f"{path}: not readable JSON ({error}).") from error
    missing = [key for key in _REQUIRED if key not in metadata]
    if missing:
        raise CatalogueSourceError(f"{path}: the open dataset's metadata lacks {', '.join(missing)}.")
    return metadata


def _parquet(folder: Path, files: tuple[DistributionFile, ...]) -> Path | None:
    return next((folder / f.file for f in files if f.file.endswith(".parquet")), None)


def _column_types(parquet: Path | None) -> dict[str, str]:
    if parquet is None or not parquet.exists():
        return {}
    with duckdb.connect() as connection:
        rows = connection.execute(f"DESCRIBE SELECT * FROM read_parquet({quote_literal(str(parquet))})")
        return {name: kind.lower() for name, kind, *_rest in rows.fetchall()}


def _description(folder: Path) -> DatasetDescription:
    metadata = _read_metadata(folder / METADATA_FILE)
    name = metadata["identifier"]
    licence = metadata["license"]
    files = tuple(DistributionFile(d["file"], d["media_type"]) for d in metadata["distributions"])
    types = _column_types(_parquet(folder, files))
    variables = tuple(
        Variable(column, types.get(column, "string"), text, *codes_of(column))
        for column, text in metadata["columns"].items()
    )
    # Input tables as "schema.table" -> the catalogue identifiers "schema/table" of the marts.
    inputs = metadata.get("data_versions", {}).get("tables", {})
    return DatasetDescription(
        identifier=open_data_identifier(name),
        name=name,
        title=metadata["title"],
        description=metadata["description"],
        layer=Layer.OPEN_DATA,
        family="OPEN DATA",
        variables=variables,
        primary_key=tuple(c for c in ("atc_class", "year", "region") if c in metadata["columns"]),
        derived_from=tuple(sorted(table.replace(".", "/", 1) for table in inputs)),
        access=AccessLevel.PUBLIC,
        keywords=tuple(
            metadata.get("keywords") or ("open data", name, "aggregate statistics", "disclosure control")
        ),
        licence=OpenLicence(licence["identifier"], licence["title"], licence["url"]),
        files=files,
    )


def open_data_folders(open_data_dir: Path) -> list[Path]:
    """The open datasets' folders: direct subfolders with a metadata.json (staging folders excluded)."""
    return sorted(
        path.parent
        for path in open_data_dir.glob(f"*/{METADATA_FILE}")
        if not path.parent.name.startswith(".")
    )


def open_data_descriptions(open_data_dir: Path) -> list[DatasetDescription]:
    return [_description(folder) for folder in open_data_folders(open_data_dir)]


def open_data_statistics(open_data_dir: Path, description: DatasetDescription) -> DatasetStatistics:
    """Rows of the published table (held to the threshold like any count) and the calendar years covered."""
    folder = open_data_dir / description.name
    parquet = _parquet(folder, description.files)
    rows = None
    if parquet is not None and parquet.exists():
        with duckdb.connect() as connection:
            query = f"SELECT count(*) FROM read_parquet({quote_literal(str(parquet))})"
            rows = connection.execute(query).fetchone()[0]
    temporal = _read_metadata(folder / METADATA_FILE).get("temporal") or {}
    start, end = temporal.get("start"), temporal.get("end")
    return DatasetStatistics(
        records=suppressed_count(rows),
        individuals=None,  # an aggregate table has no individuals of its own; its cells count them
        coverage_start=date(int(start), 1, 1) if start else None,
        coverage_end=date(int(end), 12, 31) if end else None,
        min_typical_age=None,
        max_typical_age=None,
        records_suppressed=rows is not None and 0 < rows < DISCLOSURE_THRESHOLD,
    )
