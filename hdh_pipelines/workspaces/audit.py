"""The append-only, tamper-evident audit trail of workspace materialisations (and refusals).

One Parquet file per record under ``<audit root>/records/``, named by its
sequence number, created under a temporary name and hard-linked to its final
name: ``link`` fails rather than replace an existing file, so a record, once
written, is never overwritten; files are read-only (0400) and nothing here
deletes or edits one. The trail is the union of the files
(``read_parquet('<root>/records/*.parquet')``). It lives outside the
warehouse, so workspace runs never take the warehouse's writer lock.

Each record holds the SHA-256 of the previous one (``previous_sha256``) and
its own (``record_sha256``, over every other column): a hash chain, checked
whenever the trail is read. An edited, removed or inserted record breaks the
chain at its position, reported by ``AuditTrailTampered``. The chain makes
tampering evident, not impossible: whoever can rewrite every file can forge a
new chain, so production keeps the trail where the service account can only
append (docs/security.md).

``requester`` is the identity the hub can vouch for: the operating-system
account the run's process runs as (``os:<account>``). Dagster OSS has no
authenticated users and anyone launching a run sets its tags, so a
``hdh/requester`` tag is recorded only as a claim beside it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pwd
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from hdh_pipelines.core.private_files import make_private_dir

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
_CHAIN_FIELDS = ("sequence", "previous_sha256", "record_sha256")
AUDIT_SCHEMA = pa.schema(
    [
        (name, pa.int64() if name in _INTEGER_FIELDS else pa.string())
        for name in AuditRecord.__dataclass_fields__
    ]
    + [("sequence", pa.int64()), ("previous_sha256", pa.string()), ("record_sha256", pa.string())]
)
GENESIS_SHA256 = "0" * 64
_SEQUENCE_DIGITS = 12
# What a claimed requester (a free-text run tag) may hold once recorded.
_CLAIM = re.compile(r"[A-Za-z0-9._@-]{1,63}")


class AuditTrailTampered(Exception):
    """The trail's hash chain is broken: a record was edited, removed or inserted at ``position``."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__(f"audit record {position}: {message}")
        self.position = position
        self.message = message


def process_requester(claimed: str | None = None) -> str:
    """``os:<account>`` of this process, the identity recorded; a claimed name follows as ``claimed:``."""
    requester = f"os:{pwd.getpwuid(os.geteuid()).pw_name}"
    if claimed:
        requester += f"; claimed:{claimed if _CLAIM.fullmatch(claimed) else 'unreadable'}"
    return requester


def records_dir(audit_root: Path) -> Path:
    return audit_root / "records"


def audit_glob(audit_root: Path) -> str:
    return str(records_dir(audit_root) / "*.parquet")


def _record_sha256(row: dict) -> str:
    """SHA-256 of a record's canonical JSON (every column but ``record_sha256``)."""
    content = {name: value for name, value in row.items() if name != "record_sha256"}
    return hashlib.sha256(
        json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()


def _last_record(folder: Path) -> tuple[int, str]:
    """The sequence number and hash of the newest record (0 and the genesis hash for none)."""
    names = sorted(p.name for p in folder.glob("*.parquet"))
    if not names:
        return 0, GENESIS_SHA256
    row = pq.read_table(folder / names[-1], columns=["sequence", "record_sha256"]).to_pylist()[0]
    return row["sequence"], row["record_sha256"]


def append_audit_record(audit_root: Path, record: AuditRecord) -> Path:
    """Add ``record`` to the trail as a new read-only file chained to the last; never touches another."""
    make_private_dir(audit_root)
    folder = make_private_dir(records_dir(audit_root))
    values = asdict(record)
    row = {
        name: json.dumps(values[name], sort_keys=True) if name in _JSON_FIELDS else values[name]
        for name in values
    }
    # Read-only like the records: flock needs no write access, and nothing is ever written to it.
    lock = os.open(audit_root / ".append.lock", os.O_RDONLY | os.O_CREAT, RECORD_FILE_MODE)
    try:
        # One writer at a time: each record names the one before it.
        fcntl.flock(lock, fcntl.LOCK_EX)
        sequence, previous = _last_record(folder)
        row |= {"sequence": sequence + 1, "previous_sha256": previous}
        row["record_sha256"] = _record_sha256(row)
        stamp = record.recorded_at.replace(":", "").replace("-", "").replace("+0000", "Z")
        # The project id stays out of the name: a refused request's id is not trusted to be a safe name.
        final = folder / f"{sequence + 1:0{_SEQUENCE_DIGITS}d}-{stamp}.parquet"
        temporary = folder / f".{final.name}.tmp"
        pq.write_table(pa.Table.from_pylist([row], schema=AUDIT_SCHEMA), temporary)
        try:
            os.chmod(temporary, RECORD_FILE_MODE)
            os.link(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
    finally:
        os.close(lock)
    return final


def read_audit_trail(audit_root: Path, project: str | None = None) -> list[dict]:
    """The trail in recording order (JSON fields decoded), its hash chain verified first.

    Raises ``AuditTrailTampered`` at the first record that breaks the chain.
    For reports and tests, not for bulk analysis.
    """
    if not any(records_dir(audit_root).glob("*.parquet")):
        return []
    with duckdb.connect() as connection:
        relation = connection.sql(
            "select * exclude (filename), parse_filename(filename) as file "
            "from read_parquet($glob, filename = true) order by file",
            params={"glob": audit_glob(audit_root)},
        )
        names = relation.columns
        rows = [dict(zip(names, values, strict=True)) for values in relation.fetchall()]
    verify_chain(rows)
    rows = [
        {name: value for name, value in row.items() if name != "file"}
        for row in rows
        if project is None or row["project"] == project
    ]
    for row in rows:
        for name in _JSON_FIELDS:
            row[name] = json.loads(row[name])
    return rows


def verify_chain(rows: list[dict]) -> None:
    """Check the chain of ``rows`` (as stored, in file-name order, with their ``file``)."""
    previous = GENESIS_SHA256
    for position, row in enumerate(rows, start=1):
        stored = {name: value for name, value in row.items() if name != "file"}
        if row["sequence"] != position or not row["file"].startswith(f"{position:0{_SEQUENCE_DIGITS}d}-"):
            raise AuditTrailTampered(position, "a record is missing here, or was renamed or inserted.")
        if row["previous_sha256"] != previous:
            raise AuditTrailTampered(position, "it does not follow the record before it.")
        if _record_sha256(stored) != row["record_sha256"]:
            raise AuditTrailTampered(position, "its content differs from what was recorded.")
        previous = row["record_sha256"]
