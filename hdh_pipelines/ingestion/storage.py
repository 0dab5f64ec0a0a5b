"""The hub's private storage: where verified plaintext, raw tables and quarantine records live.

Layout under the configured root (folders 0700, files 0600)::

    received/<provider>/<delivery_id>/<file>        verified, decrypted plaintext as delivered
    raw/<provider>/<delivery_id>/<DATASET>/<file>.parquet   raw tables, one folder per delivery
    raw/<provider>/<delivery_id>/_delivery.json     what was loaded, from which manifest
    quarantine/<provider>/<delivery_id>.json        why a delivery was refused
    quality/<provider>/<delivery_id>/<DATASET>-<time>.html  validation reports (examples, owner-only)
    staging/work/<provider>/<delivery_id>/<run>/    work in progress, never read by anyone
    staging/locks/<provider>/<delivery_id>          one lock file per delivery
    staging/replaced/                               older copies on their way out

A delivery becomes visible in ``raw/`` by a single rename of its folder, so a
reader sees all of it or none of it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hdh_pipelines.core.private_files import make_private_dir

DELIVERY_SUMMARY = "_delivery.json"
QUALITY_SUMMARY = "_quality.json"


@dataclass(frozen=True)
class HubStorage:
    root: Path

    @property
    def raw_root(self) -> Path:
        return self.root / "raw"

    def prepare(self) -> HubStorage:
        for folder in (
            self.root,
            self.raw_root,
            self.root / "received",
            self.root / "held",
            self.root / "quarantine",
            self.root / "staging",
        ):
            make_private_dir(folder)
        return self

    def received_dir(self, provider: str, delivery_id: str) -> Path:
        return self.root / "received" / provider / delivery_id

    def raw_dir(self, provider: str, delivery_id: str) -> Path:
        return self.raw_root / provider / delivery_id

    def held_dir(self, provider: str, delivery_id: str) -> Path:
        """Where a delivery that failed a blocking quality check is kept: visible, never read downstream."""
        return self.root / "held" / provider / delivery_id

    def quality_docs_dir(self, provider: str, delivery_id: str) -> Path:
        """The delivery's validation pages (masked examples, but still private)."""
        return self.root / "quality" / provider / delivery_id

    def delivery_dir(self, provider: str, delivery_id: str) -> Path | None:
        """The delivery's published folder, under raw/ or held/, or None before its first load."""
        for folder in (self.raw_dir(provider, delivery_id), self.held_dir(provider, delivery_id)):
            if (folder / DELIVERY_SUMMARY).exists():
                return folder
        return None

    def quarantine_file(self, provider: str, delivery_id: str) -> Path:
        return self.root / "quarantine" / provider / f"{delivery_id}.json"

    def staging_dir(self, provider: str, delivery_id: str) -> Path:
        """The delivery's own work folder: its exact name, so no other delivery's folder is ever matched."""
        return self.root / "staging" / "work" / provider / delivery_id

    def remove_leftovers(self, provider: str, delivery_id: str) -> None:
        """Remove what killed runs left: this delivery's work folder and copies moved aside.

        Called under the delivery's lock, so no live run of the same delivery
        is using the folder. Copies in ``replaced/`` are out of every reader's
        glob already; a live run of another delivery removes its own with
        ``ignore_errors``, so removing them here too is harmless.
        """
        shutil.rmtree(self.staging_dir(provider, delivery_id), ignore_errors=True)
        for aside in (self.root / "staging" / "replaced").glob("*"):
            shutil.rmtree(aside, ignore_errors=True)

    def new_staging_dir(self, provider: str, delivery_id: str) -> Path:
        """A fresh work folder inside the delivery's own (see ``staging_dir``)."""
        return make_private_dir(self.staging_dir(provider, delivery_id) / uuid.uuid4().hex)

    def lock_file(self, provider: str, delivery_id: str) -> Path:
        return make_private_dir(self.root / "staging" / "locks" / provider) / delivery_id

    def raw_glob(self, dataset: str) -> str:
        """The files of one raw table across all published deliveries (a DuckDB glob)."""
        return str(self.raw_root / "*" / "*" / dataset / "*.parquet")

    def published_summary(self, provider: str, delivery_id: str) -> dict | None:
        """The summary of the delivery as last published (to raw/ or held/), if any."""
        folder = self.delivery_dir(provider, delivery_id)
        return None if folder is None else json.loads((folder / DELIVERY_SUMMARY).read_text(encoding="utf-8"))

    def quality_summary(self, provider: str, delivery_id: str) -> dict | None:
        """The delivery's stored validation reports (dataset -> report), if it has been validated."""
        folder = self.delivery_dir(provider, delivery_id)
        path = None if folder is None else folder / QUALITY_SUMMARY
        if path is None or not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def publish(self, staged: Path, target: Path) -> None:
        """Move ``staged`` to ``target`` with one rename; an older ``target`` is replaced whole.

        The older copy is first moved aside into staging (out of every reader's
        glob), so a crash between the two renames leaves the delivery absent (a
        re-run restores it), never half old, half new.
        """
        make_private_dir(target.parent)
        aside = self._move_aside(target)
        os.rename(staged, target)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)

    def withdraw(self, target: Path) -> None:
        """Remove a published folder, first taking it out of every reader's glob with one rename."""
        aside = self._move_aside(target)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)

    def _move_aside(self, target: Path) -> Path | None:
        if not target.exists():
            return None
        aside = make_private_dir(self.root / "staging" / "replaced") / uuid.uuid4().hex
        os.rename(target, aside)
        return aside

    def quarantine_records(self) -> Iterator[dict]:
        for path in sorted((self.root / "quarantine").glob("*/*.json")):
            yield json.loads(path.read_text(encoding="utf-8"))
