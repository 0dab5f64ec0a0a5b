"""One delivery, from the inbox to published raw tables, or to quarantine.

Dagster-free, so the whole path can be exercised against a local folder or a
real SFTP server without a Dagster instance. The steps follow the contract:
signature, manifest, then each file streamed, verified and decrypted into
private staging, loaded into Parquet, and only then published by renames.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime

from hdh_deliver.errors import DeliveryRejected, Reason
from hdh_deliver.keys import HubKeyRing, ProviderRegistry
from hdh_deliver.names import MANIFEST_NAME, check_delivery_names
from hdh_pipelines.core.private_files import held_lock, make_private_dir, write_private_file
from hdh_pipelines.ingestion.raw_store import LoadSettings, load_file
from hdh_pipelines.ingestion.receive import DeliverySource, plaintext_name, read_manifest, receive_file
from hdh_pipelines.ingestion.storage import DELIVERY_SUMMARY, QUALITY_SUMMARY, HubStorage
from hdh_pipelines.quality import DuckDBSettings
from hdh_pipelines.quality.gate import validate_delivery
from hdh_pipelines.registry import DatasetRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedFile:
    name: str
    dataset: str
    registry_dataset: str
    media_type: str
    rows: int
    ciphertext_bytes: int
    plaintext_bytes: int
    ciphertext_sha256: str
    plaintext_sha256: str
    hub_key_id: str
    segments: int
    decrypt_seconds: float
    load_seconds: float


@dataclass(frozen=True)
class IngestionReport:
    provider: str
    delivery_id: str
    manifest_sha256: str
    signing_key_id: str
    created_at: str
    loaded_at: str
    files: tuple[LoadedFile, ...] = field(default_factory=tuple)
    # Dataset -> whether it passed its blocking (error-severity) expectations;
    # empty when the hub runs without a quality gate.
    quality_passed: dict[str, bool] = field(default_factory=dict)
    already_loaded: bool = False

    @property
    def held(self) -> bool:
        """True when a blocking quality failure kept the delivery out of the raw tables."""
        return not all(self.quality_passed.values())

    def rows_by_dataset(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for loaded in self.files:
            totals[loaded.registry_dataset] = totals.get(loaded.registry_dataset, 0) + loaded.rows
        return totals

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict, *, already_loaded: bool) -> IngestionReport:
        files = tuple(LoadedFile(**f) for f in document["files"])
        return cls(**{**document, "files": files, "already_loaded": already_loaded})


@dataclass(frozen=True)
class QualityGate:
    """Validate each staged table with its Great Expectations suite before publication."""

    settings: DuckDBSettings = field(default_factory=DuckDBSettings)


@dataclass(frozen=True)
class HubContext:
    """Everything the hub needs to judge a delivery, loaded once per run."""

    keyring: HubKeyRing
    providers: ProviderRegistry
    registry: DatasetRegistry
    storage: HubStorage
    load_settings: LoadSettings = field(default_factory=LoadSettings)
    quality_gate: QualityGate | None = None


@contextmanager
def _delivery_lock(storage: HubStorage, provider: str, delivery_id: str) -> Iterator[None]:
    """Serialise work on one delivery (a retry launched while a run is still going)."""
    with held_lock(storage.lock_file(provider, delivery_id)):
        yield


def ingest_delivery(
    source: DeliverySource,
    provider: str,
    delivery_id: str,
    hub: HubContext,
    *,
    run_id: str | None = None,
    expected_manifest_sha256: str | None = None,
) -> IngestionReport:
    """Verify, decrypt and load a delivery; quarantine it whole on any breach of the contract.

    Idempotent: a delivery already published from the same manifest is not
    loaded again. Errors that are not the delivery's fault (the server going
    away, a full disk) propagate unchanged, quarantine nothing and can be retried.

    ``expected_manifest_sha256`` pins the run to the manifest its sensor saw:
    another manifest on the server now is refused (``manifest_changed``). A
    refusal never touches what an earlier run published: that copy was
    verified in full against a signed manifest and stays; the quarantine
    record names its manifest (``published_manifest_sha256``).
    """
    # A bad folder name is refused before it is used in any path.
    check_delivery_names(provider, delivery_id)
    storage = hub.storage.prepare()
    with _delivery_lock(storage, provider, delivery_id):
        storage.remove_leftovers(provider, delivery_id)
        try:
            report = _ingest(source, provider, delivery_id, hub, expected_manifest_sha256)
        except DeliveryRejected as rejection:
            record_quarantine(storage, provider, delivery_id, rejection, run_id=run_id)
            raise
        storage.quarantine_file(provider, delivery_id).unlink(missing_ok=True)
        return report


def _ingest(
    source: DeliverySource,
    provider: str,
    delivery_id: str,
    hub: HubContext,
    expected_manifest_sha256: str | None,
) -> IngestionReport:
    storage = hub.storage
    verified = read_manifest(
        source,
        provider=provider,
        delivery_id=delivery_id,
        providers=hub.providers,
        dataset_known=lambda name: hub.registry.resolve(name) is not None,
        dataset_providers=lambda name: hub.registry.resolve(name).providers,
    )
    if expected_manifest_sha256 is not None and verified.sha256 != expected_manifest_sha256.lower():
        raise DeliveryRejected(
            Reason.MANIFEST_CHANGED,
            "The manifest on the server is not the one this run was launched for: it changed after the "
            "delivery was announced. Send the new content as a new delivery_id.",
            file=MANIFEST_NAME,
        )
    published = storage.published_summary(provider, delivery_id)
    if published is not None and published.get("manifest_sha256") == verified.sha256:
        return IngestionReport.from_json(published, already_loaded=True)

    loaded_at = datetime.now(UTC)
    staging = storage.new_staging_dir(provider, delivery_id)
    try:
        plain_dir = make_private_dir(staging / "received")
        raw_dir = make_private_dir(staging / "raw")
        scratch = make_private_dir(staging / "scratch")
        loaded = []
        for entry in verified.manifest.files:
            schema = hub.registry.resolve(entry.dataset)
            started = time.perf_counter()
            plaintext = plain_dir / plaintext_name(entry)
            decrypted = receive_file(source, entry, hub.keyring, plaintext)
            decrypted_at = time.perf_counter()
            table_dir = make_private_dir(raw_dir / schema.name)
            rows = load_file(
                plaintext,
                entry,
                schema,
                table_dir / f"{entry.name}.parquet",
                provider=provider,
                delivery_id=delivery_id,
                loaded_at=loaded_at,
                scratch=scratch,
                settings=hub.load_settings,
            )
            if rows != entry.rows:
                raise DeliveryRejected(
                    Reason.ROW_COUNT_MISMATCH,
                    f"The file holds {rows} data rows; the manifest says {entry.rows}.",
                    file=entry.name,
                )
            loaded.append(
                LoadedFile(
                    name=entry.name,
                    dataset=entry.dataset,
                    registry_dataset=schema.name,
                    media_type=entry.media_type,
                    rows=rows,
                    ciphertext_bytes=decrypted.ciphertext_bytes,
                    plaintext_bytes=decrypted.plaintext_bytes,
                    ciphertext_sha256=decrypted.ciphertext_sha256,
                    plaintext_sha256=decrypted.plaintext_sha256,
                    hub_key_id=decrypted.key_id,
                    segments=decrypted.segments,
                    decrypt_seconds=round(decrypted_at - started, 3),
                    load_seconds=round(time.perf_counter() - decrypted_at, 3),
                )
            )
        quality_passed = {}
        if hub.quality_gate is not None:
            reports = validate_delivery(
                raw_dir,
                hub.registry,
                published_root=storage.raw_root,
                docs_dir=storage.quality_docs_dir(provider, delivery_id),
                settings=replace(hub.quality_gate.settings, scratch=scratch),
            )
            quality_passed = {dataset: r.success for dataset, r in reports.items()}
            summary = {dataset: r.to_json() for dataset, r in reports.items()}
            write_private_file(raw_dir / QUALITY_SUMMARY, json.dumps(summary, indent=2).encode())
        report = IngestionReport(
            provider=provider,
            delivery_id=delivery_id,
            manifest_sha256=verified.sha256,
            signing_key_id=verified.signing_key_id,
            created_at=verified.manifest.created_at,
            loaded_at=loaded_at.isoformat(),
            files=tuple(loaded),
            quality_passed=quality_passed,
        )
        write_private_file(raw_dir / DELIVERY_SUMMARY, json.dumps(report.to_json(), indent=2).encode())
        shutil.rmtree(scratch)
        # Plaintext first, raw tables last: the raw folder's rename is what makes
        # the delivery visible to every reader. A delivery that failed a blocking
        # check goes to held/ instead, whole: visible with its reports, read by nothing.
        storage.publish(plain_dir, storage.received_dir(provider, delivery_id))
        if report.held:
            storage.withdraw(storage.raw_dir(provider, delivery_id))
            storage.publish(raw_dir, storage.held_dir(provider, delivery_id))
        else:
            storage.publish(raw_dir, storage.raw_dir(provider, delivery_id))
            storage.withdraw(storage.held_dir(provider, delivery_id))
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def record_quarantine(
    storage: HubStorage,
    provider: str,
    delivery_id: str,
    rejection: DeliveryRejected,
    *,
    run_id: str | None = None,
) -> dict:
    """Write (or overwrite, on a re-run) the delivery's quarantine record."""
    published = storage.published_summary(provider, delivery_id)
    record = {
        "provider": provider,
        "delivery_id": delivery_id,
        **rejection.as_dict(),
        "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
        # An earlier run's verified copy stays published; this names it.
        "published_manifest_sha256": None if published is None else published["manifest_sha256"],
    }
    path = storage.quarantine_file(provider, delivery_id)
    make_private_dir(path.parent)
    write_private_file(path, json.dumps(record, indent=2).encode())
    log.warning("delivery %s/%s quarantined: %s", provider, delivery_id, rejection.reason)
    return record
