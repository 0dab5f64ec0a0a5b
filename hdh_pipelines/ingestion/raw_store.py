"""Load verified plaintext files into raw tables: one Parquet file per delivered file.

The raw layer is a faithful copy: every registry column is kept as the text
that was delivered (VARCHAR), so a value that does not fit its declared type
is still there for the quality checks to point at rather than lost in a cast.
Typing is the staging models' job. Each row also says where it came from:
``hdh_provider``, ``hdh_delivery_id``, ``hdh_dataset`` (the delivered name,
e.g. ``T_MCO25B``) and ``hdh_loaded_at``.

DuckDB streams the file from disk to disk; memory is capped by configuration,
not by the file's size.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from hdh_deliver.errors import DeliveryRejected, Reason
from hdh_deliver.manifest import FileEntry
from hdh_pipelines.core.private_files import PRIVATE_FILE_MODE
from hdh_pipelines.core.sql import quote_identifier, quote_literal
from hdh_pipelines.registry import DatasetSchema

LINEAGE_COLUMNS = ("hdh_provider", "hdh_delivery_id", "hdh_dataset", "hdh_loaded_at")
_DUCKDB_LINE = re.compile(r"[Ll]ine:? (\d+)")
# Longest header accepted: a header is column names, so anything larger is not one.
_MAX_HEADER_CHARS = 1 << 20


@dataclass(frozen=True)
class LoadSettings:
    """DuckDB's budget for one load: memory is capped, spilling goes to private scratch space."""

    memory_limit: str = "1GB"
    threads: int = 2


def _csv_header(path: Path, entry: FileEntry) -> list[str]:
    opener = gzip.open if entry.compression == "gzip" else open
    encoding = "utf-8-sig" if entry.encoding == "utf-8" else entry.encoding
    try:
        with opener(path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding=encoding, newline="")
            first = text.readline(_MAX_HEADER_CHARS)
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as error:
        raise DeliveryRejected(
            Reason.BAD_DATA,
            f"The file's header line cannot be read as {entry.encoding}"
            f"{' gzip' if entry.compression == 'gzip' else ''} text.",
            file=entry.name,
        ) from error
    if not first.strip():
        raise DeliveryRejected(Reason.BAD_DATA, "The CSV file has no header line.", file=entry.name)
    return next(csv.reader([first], delimiter=entry.delimiter or ";", quotechar='"'))


def _check_columns(columns: Sequence[str], schema: DatasetSchema, entry: FileEntry) -> None:
    if len(set(columns)) != len(columns):
        raise DeliveryRejected(Reason.BAD_DATA, "The file's header names a column twice.", file=entry.name)
    # Positions, never the names: a header that is not one (a file without its header line)
    # would put a whole data row into the quarantine record and the Dagster UI.
    unknown = [str(position) for position, c in enumerate(columns, start=1) if c not in schema.column_names]
    if unknown:
        raise DeliveryRejected(
            Reason.UNKNOWN_COLUMN,
            f"The file's header has {len(unknown)} column name(s) that dataset {schema.name} does not "
            f"declare, at position(s) {', '.join(unknown[:20])}{' …' if len(unknown) > 20 else ''} "
            "(names are not repeated here: if the file has no header line, add it).",
            file=entry.name,
        )
    missing = [f.name for f in schema.fields if f.required and f.name not in columns]
    if missing:
        raise DeliveryRejected(
            Reason.MISSING_COLUMN,
            f"The file lacks required columns of dataset {schema.name}: {', '.join(missing)}.",
            file=entry.name,
        )


def _source_relation(path: Path, entry: FileEntry, columns: Sequence[str]) -> str:
    if not entry.is_csv:
        return f"read_parquet({quote_literal(str(path))})"
    types = ", ".join(f"{quote_literal(c)}: 'VARCHAR'" for c in columns)
    return (
        f"read_csv({quote_literal(str(path))}, header = true, columns = {{{types}}}, "
        f"delim = {quote_literal(entry.delimiter or ';')}, quote = '\"', escape = '\"', "
        f"encoding = {quote_literal(entry.encoding or 'utf-8')}, "
        f"compression = {quote_literal('gzip' if entry.compression == 'gzip' else 'none')}, "
        "strict_mode = true, null_padding = false, auto_detect = false)"
    )


def load_file(
    plaintext: Path,
    entry: FileEntry,
    schema: DatasetSchema,
    destination: Path,
    *,
    provider: str,
    delivery_id: str,
    loaded_at: datetime,
    scratch: Path,
    settings: LoadSettings | None = None,
) -> int:
    """Write ``destination`` (Parquet, owner-only) from one verified file; return its data rows.

    Refuses the file if its columns do not match the dataset or if it cannot be
    parsed; the refusal names the line, never the data.
    """
    if entry.is_csv:
        columns = _csv_header(plaintext, entry)
    else:
        try:
            columns = pq.read_schema(plaintext).names
        except Exception as error:  # pyarrow raises several types for a non-Parquet file
            raise DeliveryRejected(
                Reason.BAD_DATA, "The file is not a readable Parquet file.", file=entry.name
            ) from error
    _check_columns(columns, schema, entry)
    selected = ", ".join(
        f"CAST({quote_identifier(f.name)} AS VARCHAR)" if f.name in columns else "CAST(NULL AS VARCHAR)"
        for f in schema.fields
    )
    aliases = ", ".join(quote_identifier(f.name) for f in schema.fields)
    lineage = ", ".join(
        [
            quote_literal(provider),
            quote_literal(delivery_id),
            quote_literal(entry.dataset),
            f"TIMESTAMP {quote_literal(loaded_at.strftime('%Y-%m-%d %H:%M:%S.%f'))}",
        ]
    )
    source = _source_relation(plaintext, entry, columns)
    query = (
        f"COPY (SELECT * FROM (SELECT {selected}, {lineage} FROM {source})"
        f" AS loaded({aliases}, {', '.join(LINEAGE_COLUMNS)})) "
        f"TO {quote_literal(str(destination))} (FORMAT parquet, COMPRESSION zstd)"
    )
    settings = settings or LoadSettings()
    config = {
        "memory_limit": settings.memory_limit,
        "threads": settings.threads,
        "temp_directory": str(scratch),
        "enable_external_access": True,
    }
    fault = None
    try:
        with duckdb.connect(config=config) as connection:
            rows = connection.execute(query).fetchone()[0]
    except duckdb.Error as error:
        line = _DUCKDB_LINE.search(str(error))
        fault = f"{' near line ' + line.group(1) if line else ''} ({type(error).__name__})"
    if fault is not None:
        # Raised outside the handler: DuckDB's message quotes the offending value, and an
        # exception's context is printed with its traceback (logs, the Dagster UI).
        raise DeliveryRejected(
            Reason.BAD_DATA, f"The file cannot be parsed as declared in the manifest{fault}.", file=entry.name
        )
    os.chmod(destination, PRIVATE_FILE_MODE)
    return rows
