"""Find complete deliveries in the SFTP inbox, by identity, within a bounded budget.

What is new is decided by identity, ``(provider, delivery_id)`` against the set
of deliveries already known to the hub, never by modification times: a file
uploaded with an old timestamp must not be skipped. Work per scan is bounded
(new deliveries returned, server round trips, seconds) and shared round robin
between providers; each provider's scan resumes after the last folder it
looked at, so every folder is reached in turn even when the inbox holds
thousands, and one provider's backlog never holds the others back.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field

from hdh_deliver.errors import DeliveryRejected
from hdh_deliver.manifest import parse_manifest
from hdh_deliver.names import MANIFEST_NAME, SIGNATURE_NAME, is_delivery_id, is_provider
from hdh_deliver.transfer import SftpSession
from hdh_pipelines.ingestion.receive import MAX_MANIFEST_BYTES


@dataclass(frozen=True)
class FoundDelivery:
    provider: str
    delivery_id: str
    manifest_sha256: str | None  # None when the manifest is missing: the run will quarantine it
    # Dataset names the manifest lists, read before its signature is verified: they only choose
    # which raw assets and checks the run plans; the run, pinned to this manifest's digest, verifies it.
    # Empty when the manifest does not parse (the run will quarantine it).
    datasets: tuple[str, ...] = ()


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
    # Per provider, the last delivery folder looked at, for the next scan to resume after;
    # a provider whose pass completed is absent (its next scan starts from the beginning).
    resume_after: dict[str, str] = field(default_factory=dict)
    exhausted: bool = False  # the budget ended the scan before the end of the inbox


def _rotated(folders: list[str], after: str | None) -> list[str]:
    """``folders`` (sorted) starting after ``after``, then wrapping around."""
    if after is None:
        return folders
    return [f for f in folders if f > after] + [f for f in folders if f <= after]


def scan_inbox(
    session: SftpSession,
    inbox: str,
    known: Container[str],
    *,
    key_of: Callable[[str, str], str],
    resume_after: Mapping[str, str] | None = None,
    budget: ScanBudget = ScanBudget(),
    clock: Callable[[], float] = time.monotonic,
) -> ScanResult:
    """List ``<inbox>/<provider>/<delivery_id>/`` and return the complete, unknown deliveries.

    ``known`` holds identities as ``key_of(provider, delivery_id)`` returns them.
    Only ``manifest.json.sig`` and ``manifest.json`` are ever opened; ``.part``
    names are never read. Providers are probed in turn, one folder each per
    round, each resuming after its own last folder: the budget is shared
    equally, so thousands of unsigned folders of one provider delay the others
    by a round, never by a pass over them.
    """
    started = clock()
    result = ScanResult()
    resume_after = resume_after or {}
    probes = 0
    queues: dict[str, deque[str]] = {}
    for provider in session.subdirectories(inbox):
        if not is_provider(provider):
            result.ignored_names += 1
            continue
        pending = []
        for delivery_id in session.subdirectories(f"{inbox}/{provider}"):
            if not is_delivery_id(delivery_id):
                result.ignored_names += 1
            elif key_of(provider, delivery_id) not in known:
                pending.append(delivery_id)
        probes += 1
        if pending:
            queues[provider] = deque(_rotated(pending, resume_after.get(provider)))
    # Providers with folders left this scan; a provider keeps its place until its queue is empty.
    positions = {provider: resume_after.get(provider) for provider in queues}
    while queues and not result.exhausted:
        for provider in list(queues):
            if (
                len(result.found) >= budget.max_new
                or probes >= budget.max_probes
                or clock() - started >= budget.max_seconds
            ):
                result.exhausted = True
                break
            delivery_id = queues[provider].popleft()
            if not queues[provider]:
                del queues[provider]
                positions.pop(provider)
            else:
                positions[provider] = delivery_id
            probes += _probe(session, f"{inbox}/{provider}/{delivery_id}", provider, delivery_id, result)
    if result.exhausted:
        result.resume_after = {p: position for p, position in positions.items() if position is not None}
    return result


def _probe(session: SftpSession, folder: str, provider: str, delivery_id: str, result: ScanResult) -> int:
    """Look at one delivery folder; return the server round trips it took."""
    try:
        signed = session.size(f"{folder}/{SIGNATURE_NAME}") is not None
    except DeliveryRejected:
        # Not a regular file: the run refuses it with its reason (bad_name), so it is found.
        result.found.append(FoundDelivery(provider, delivery_id, None))
        return 1
    if not signed:
        result.waiting += 1
        return 1
    try:
        manifest = session.read_small(f"{folder}/{MANIFEST_NAME}", MAX_MANIFEST_BYTES)
    except (FileNotFoundError, ValueError, DeliveryRejected):
        result.found.append(FoundDelivery(provider, delivery_id, None))
        return 2
    digest = hashlib.sha256(manifest).hexdigest()
    result.found.append(
        FoundDelivery(provider, delivery_id, digest, _listed_datasets(manifest, provider, delivery_id))
    )
    return 2


def _listed_datasets(manifest: bytes, provider: str, delivery_id: str) -> tuple[str, ...]:
    """The dataset names a manifest lists, in order, once each; empty if it does not parse."""
    try:
        parsed = parse_manifest(manifest, provider=provider, delivery_id=delivery_id, dataset_known=_any_name)
    except DeliveryRejected:
        return ()
    return tuple(dict.fromkeys(entry.dataset for entry in parsed.files))


def _any_name(_dataset: str) -> bool:
    # Whether a dataset is registered is the run's decision (unknown_dataset), not the scan's.
    return True


def inbox_data_version(delivery_keys: Iterable[str]) -> str:
    """The inbox's data version: a digest of the complete deliveries seen in it, in any order.

    A delivery id names one immutable content (new content is a new id), so the
    set of complete deliveries changes exactly when a new one appears.
    """
    return hashlib.sha256("\n".join(sorted(set(delivery_keys))).encode()).hexdigest()
