"""Find complete deliveries in the SFTP inbox, by identity, within a bounded budget.

What is new is decided by identity, ``(provider, delivery_id)`` against the set
of deliveries already known to the hub, never by modification times: a file
uploaded with an old timestamp must not be skipped. Work per scan is bounded
(new deliveries returned, server round trips, seconds), and the scan resumes
after the last folder it looked at, so every folder is reached in turn even
when the inbox holds thousands.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field

from hdh_pipelines.delivery.names import MANIFEST_NAME, SIGNATURE_NAME, is_delivery_id, is_provider
from hdh_pipelines.delivery.receive import MAX_MANIFEST_BYTES
from hdh_pipelines.delivery.transfer import SftpSession


@dataclass(frozen=True)
class FoundDelivery:
    provider: str
    delivery_id: str
    manifest_sha256: str | None  # None when the manifest is missing: the run will quarantine it


@dataclass(frozen=True)
class ScanBudget:
    max_new: int = 25
    max_probes: int = 500
    max_seconds: float = 20.0


@dataclass
class ScanResult:
    found: list[FoundDelivery] = field(default_factory=list)
    waiting: int = 0  # folders whose signature is not there yet
    ignored_names: int = 0  # folders whose names the format does not allow
    resume_after: str | None = None  # position for the next scan; None when the pass completed
    exhausted: bool = False  # the budget ended the scan before the end of the inbox


def _position(provider: str, delivery_id: str) -> str:
    return f"{provider}/{delivery_id}"


def scan_inbox(
    session: SftpSession,
    inbox: str,
    known: Container[str],
    *,
    key_of: Callable[[str, str], str],
    resume_after: str | None = None,
    budget: ScanBudget = ScanBudget(),
    clock: Callable[[], float] = time.monotonic,
) -> ScanResult:
    """List ``<inbox>/<provider>/<delivery_id>/`` and return the complete, unknown deliveries.

    ``known`` holds identities as ``key_of(provider, delivery_id)`` returns them.
    Only ``manifest.json.sig`` and ``manifest.json`` are ever opened; ``.part``
    names are never read.
    """
    started = clock()
    result = ScanResult()
    probes = 0
    folders = []
    for provider in session.subdirectories(inbox):
        if not is_provider(provider):
            result.ignored_names += 1
            continue
        for delivery_id in session.subdirectories(f"{inbox}/{provider}"):
            if not is_delivery_id(delivery_id):
                result.ignored_names += 1
                continue
            if key_of(provider, delivery_id) not in known:
                folders.append((provider, delivery_id))
        probes += 1
    # Start after the previous scan's last folder, then wrap around.
    if resume_after is not None:
        later = [f for f in folders if _position(*f) > resume_after]
        folders = later + [f for f in folders if _position(*f) <= resume_after]
    for provider, delivery_id in folders:
        if (
            len(result.found) >= budget.max_new
            or probes >= budget.max_probes
            or clock() - started >= budget.max_seconds
        ):
            result.exhausted = True
            break
        folder = f"{inbox}/{provider}/{delivery_id}"
        probes += 1
        result.resume_after = _position(provider, delivery_id)
        if session.size(f"{folder}/{SIGNATURE_NAME}") is None:
            result.waiting += 1
            continue
        probes += 1
        result.found.append(FoundDelivery(provider, delivery_id, _manifest_digest(session, folder)))
    if not result.exhausted:
        result.resume_after = None
    return result


def _manifest_digest(session: SftpSession, folder: str) -> str | None:
    try:
        return hashlib.sha256(session.read_small(f"{folder}/{MANIFEST_NAME}", MAX_MANIFEST_BYTES)).hexdigest()
    except (FileNotFoundError, ValueError):
        return None
