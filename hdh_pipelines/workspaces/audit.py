"""The append-only audit trail of workspace materialisations (and refusals).

One Parquet file per record under ``<audit root>/records/``, created under a
temporary name and hard-linked to its final name: ``link`` fails rather than
replace an existing file, so a record, once written, is never overwritten;
files are read-only (0400) and nothing here deletes or edits one. The trail
is the union of the files (``read_parquet('<root>/records/*.parquet')``).
It lives outside the warehouse, so workspace runs never take the warehouse's
writer lock to record themselves, and concurrent runs never contend for one.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from hdh_pipelines.storage import make_private_dir

RECORD_FILE_MODE = 0o400


@dataclass(frozen=True)
class AuditRecord:
    project: str
    run_id: str
    requester: str
    outcome: str  # "materialised" or "refused"
    reason: str | None = None
    message: str | None = None
    datasets: list[str] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)
    months_extracted: list[str] = field(default_factory=list)
    months_carried_over: list[str] = field(default_factory=list)
    population_persons: int | None = None
    # Persons present in the previous workspace whom the opt-out registry now excludes.
    opted_out_persons_removed: int | None = None
    approval_references: dict[str, str] = field(default_factory=dict)
    opt_out_registry_version: dict[str, str] = field(default_factory=dict)
    project_content_digest: str | None = None
    key_fingerprint: str | None = None
    recorded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="microseconds"))


_JSON_FIELDS = (
    "datasets",
    "row_counts",
    "months_extracted",
    "months_carried_over",
    "approval_references",
    "opt_out_registry_version",
)
_INTEGER_FIELDS = ("population_persons", "opted_out_persons_removed")
AUDIT_SCHEMA = pa.schema(
    [
        (name, pa.int64() if name in _INTEGER_FIELDS else pa.string())
        for name in AuditRecord.__dataclass_fields__
    ]
)


def records_dir(audit_root: Path) -> Path:
    return audit_root / "records"


def audit_glob(audit_root: Path) -> str:
    return str(records_dir(audit_root) / "*.parquet")


def append_audit_record(audit_root: Path, record: AuditRecord) -> Path:
    """Add ``record`` to the trail as a new read-only file; never touches an existing one."""
    make_private_dir(audit_root)
    folder = make_private_dir(records_dir(audit_root))
    values = asdict(record)
    row = {
        name: json.dumps(values[name], sort_keys=True) if name in _JSON_FIELDS else values[name]
        for name in values
    }
    stamp = record.recorded_at.replace(":", "").replace("-", "").replace("+0000", "Z")
    # The project id stays out of the name: a refused request's id is not trusted to be a safe file name.
    final = folder / f"{stamp}-{uuid.uuid4().hex}.parquet"
    temporary = folder / f".{final.name}.tmp"
    pq.write_table(pa.Table.from_pylist([row], schema=AUDIT_SCHEMA), temporary)
    try:
        os.chmod(temporary, RECORD_FILE_MODE)
        os.link(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    return final


def read_audit_trail(audit_root: Path, project: str | None = None) -> list[dict]:
    """The trail in recording order (JSON fields decoded); for reports and tests, not for bulk analysis."""
    if not any(records_dir(audit_root).glob("*.parquet")):
        return []
    with duckdb.connect() as connection:
        relation = connection.sql(
            "select * from read_parquet($glob) where $project is null or project = $project "
            "order by recorded_at",
            params={"glob": audit_glob(audit_root), "project": project},
        )
        names = relation.columns
        rows = [dict(zip(names, values, strict=True)) for values in relation.fetchall()]
    for row in rows:
        for name in _JSON_FIELDS:
            row[name] = json.loads(row[name])
    return rows
