"""Where the rights stage keeps what it received and decided: owner-only, under ``<private root>/rights/``.

Layout (folders 0700, files 0600)::

    requests/<request_id>.json      the register: one entry per accepted request, its deadline and state
    received/<request_id>.json(.sig) the request as signed, moved out of the intake once applied
    nonces/<sha256(nonce)>           one empty marker per nonce ever accepted (replay protection)
    oppositions/<request_id>.parquet one opt-out source row per opposition or withdrawal (dbt source rights)
    letters/<request_id>.html        answers for the hub's staff to send (access requests)
    refused/<id>/                    a refused request's files and refusal.json (reason, message)

``oppositions/`` sits beside the raw tables' root (``<private root>/raw``):
dbt reads it as ``$HDH_RAW_ROOT/../rights/oppositions/*.parquet``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hdh_pipelines.core.private_files import (
    PRIVATE_FILE_MODE,
    held_lock,
    make_private_dir,
    write_private_file,
)

RIGHTS_DIR = "rights"
OPPOSITION_ACTIONS = {"opposition": "OPPOSITION", "withdrawal": "WITHDRAWAL"}
_OPPOSITION_SCHEMA = pa.schema(
    [
        ("BEN_NIR_PSA", pa.string()),
        ("BEN_RNG_GEM", pa.string()),
        ("RIGHTS_ACTION", pa.string()),
        ("REQUEST_ID", pa.string()),
        ("RECEIVED_AT", pa.timestamp("us")),
    ]
)


@dataclass(frozen=True)
class RightsStore:
    root: Path

    @classmethod
    def under(cls, private_root: Path) -> RightsStore:
        return cls(private_root / RIGHTS_DIR)

    def prepare(self) -> RightsStore:
        for name in ("", "requests", "received", "nonces", "oppositions", "letters", "refused"):
            make_private_dir(self.root / name)
        return self

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One processing at a time (sensor runs, nightly runs): the second waits for the first."""
        with held_lock(self.root / ".lock"):
            yield

    # -- the register ------------------------------------------------------------------------------

    def entry_file(self, request_id: str) -> Path:
        return self.root / "requests" / f"{request_id}.json"

    def save_entry(self, entry: dict) -> None:
        write_private_file(
            self.entry_file(entry["request_id"]),
            (json.dumps(entry, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"),
        )

    def entry(self, request_id: str) -> dict | None:
        try:
            return json.loads(self.entry_file(request_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def entries(self) -> list[dict]:
        return [
            json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((self.root / "requests").glob("*.json"))
        ]

    # -- replay protection -------------------------------------------------------------------------

    def received_file(self, request_id: str) -> Path:
        return self.root / "received" / f"{request_id}.json"

    def claim_nonce(self, nonce: str, request_id: str) -> bool:
        """Record ``nonce`` for ``request_id``; False if another request already used it."""
        marker = self.root / "nonces" / hashlib.sha256(nonce.encode()).hexdigest()
        try:
            descriptor = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        except FileExistsError:
            # A run killed after claiming resumes its own request: same nonce, same id.
            return marker.read_text(encoding="utf-8") == request_id
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(request_id)
        return True

    # -- effects -----------------------------------------------------------------------------------

    def write_opposition(
        self, request_id: str, action: str, ben_nir_psa: str, ben_rng_gem: int, received_at: datetime
    ) -> Path:
        """The opt-out source row of an opposition or a withdrawal (idempotent: named by the request)."""
        row = {
            "BEN_NIR_PSA": ben_nir_psa,
            "BEN_RNG_GEM": str(ben_rng_gem),
            "RIGHTS_ACTION": OPPOSITION_ACTIONS[action],
            "REQUEST_ID": request_id,
            "RECEIVED_AT": received_at.replace(tzinfo=None),
        }
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist([row], schema=_OPPOSITION_SCHEMA), buffer)
        path = self.root / "oppositions" / f"{request_id}.parquet"
        # dbt's glob is *.parquet: the temporary name write_private_file uses ends in .tmp.
        write_private_file(path, buffer.getvalue())
        return path

    def letter_file(self, request_id: str) -> Path:
        return self.root / "letters" / f"{request_id}.html"

    def refuse(self, files: list[Path], refusal: dict) -> Path:
        """Move a refused request's files out of the intake, beside the reason it was refused."""
        folder = make_private_dir(self.root / "refused" / uuid.uuid4().hex)
        write_private_file(folder / "refusal.json", (json.dumps(refusal, indent=2) + "\n").encode())
        for path in files:
            if path.exists():
                move(path, folder / path.name)
        return folder

    def refusals(self) -> list[dict]:
        return [
            json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((self.root / "refused").glob("*/refusal.json"))
        ]


def move(source: Path, target: Path) -> None:
    """Move a file into the private storage, owner-only (rename, or copy then delete across devices)."""
    try:
        os.rename(source, target)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        write_private_file(target, source.read_bytes())
        source.unlink()
    os.chmod(target, PRIVATE_FILE_MODE)
