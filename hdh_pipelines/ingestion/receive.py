"""The hub side of the contract: verify a delivery's manifest and files, decrypt them privately.

A ``DeliverySource`` is where the delivery's files are read from: the SFTP
inbox in production, a local folder in tools and tests. Nothing here writes
outside the destination folder it is given, and nothing unverified is ever
renamed into place.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from hdh_deliver.envelope import DecryptionResult, Readable, decrypt_stream
from hdh_deliver.errors import DeliveryRejected, Reason
from hdh_deliver.keys import HubKeyRing, ProviderRegistry
from hdh_deliver.manifest import FileEntry, Manifest, parse_manifest, verify_signature
from hdh_deliver.names import ENCRYPTED_SUFFIX, MANIFEST_NAME, SIGNATURE_NAME, require_regular_file
from hdh_deliver.transfer import SftpSession
from hdh_pipelines.core.private_files import PRIVATE_FILE_MODE

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_SIGNATURE_BYTES = 1024


class DeliverySource(Protocol):
    def size(self, name: str) -> int | None: ...
    def read_small(self, name: str, limit: int) -> bytes: ...
    def open_stream(self, name: str, size: int) -> AbstractContextManager[Readable]: ...


@dataclass(frozen=True)
class SftpDeliverySource:
    session: SftpSession
    folder: str

    def size(self, name: str) -> int | None:
        return self.session.size(f"{self.folder}/{name}")

    def read_small(self, name: str, limit: int) -> bytes:
        return self.session.read_small(f"{self.folder}/{name}", limit)

    def open_stream(self, name: str, size: int) -> AbstractContextManager[Readable]:
        return self.session.open_stream(f"{self.folder}/{name}", size)


@dataclass(frozen=True)
class LocalDeliverySource:
    folder: Path

    def size(self, name: str) -> int | None:
        try:
            attributes = (self.folder / name).lstat()
        except FileNotFoundError:
            return None
        require_regular_file(attributes.st_mode, name)
        return attributes.st_size

    def read_small(self, name: str, limit: int) -> bytes:
        with self._open(name) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"{name} is larger than {limit} bytes")
        return data

    @contextmanager
    def open_stream(self, name: str, size: int):
        with self._open(name) as handle:
            yield handle

    def _open(self, name: str) -> BinaryIO:
        # O_NOFOLLOW: a symlink swapped in after size() is refused by the kernel, not followed.
        try:
            descriptor = os.open(self.folder / name, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as error:
            if error.errno == errno.ELOOP:
                require_regular_file(stat.S_IFLNK, name)
            raise
        handle = os.fdopen(descriptor, "rb", buffering=1 << 20)
        try:
            require_regular_file(os.fstat(handle.fileno()).st_mode, name)
        except DeliveryRejected:
            handle.close()
            raise
        return handle


@dataclass(frozen=True)
class VerifiedManifest:
    manifest: Manifest
    sha256: str
    signing_key_id: str


def read_manifest(
    source: DeliverySource,
    *,
    provider: str,
    delivery_id: str,
    providers: ProviderRegistry,
    dataset_known: Callable[[str], bool],
    dataset_providers: Callable[[str], Sequence[str]],
) -> VerifiedManifest:
    """Check the signature with the provider's live keys, then parse the manifest strictly.

    ``dataset_providers`` gives, for a delivered dataset name, the providers the
    registry allows to deliver it: a file of any other dataset is refused here,
    before anything is downloaded or decrypted.
    """
    known_provider = providers.get(provider)
    if known_provider is None:
        raise DeliveryRejected(
            Reason.UNKNOWN_PROVIDER, "The delivery comes from a provider the hub's registry does not know."
        )
    files = {}
    for name, limit in ((MANIFEST_NAME, MAX_MANIFEST_BYTES), (SIGNATURE_NAME, MAX_SIGNATURE_BYTES)):
        if source.size(name) is None:
            raise DeliveryRejected(Reason.MISSING_FILE, f"{name} is missing.", file=name)
        try:
            files[name] = source.read_small(name, limit)
        except ValueError as error:
            reason = Reason.BAD_MANIFEST if name == MANIFEST_NAME else Reason.BAD_SIGNATURE
            raise DeliveryRejected(reason, f"{name} is larger than {limit} bytes.", file=name) from error
    manifest_bytes = files[MANIFEST_NAME]
    signer = verify_signature(manifest_bytes, files[SIGNATURE_NAME], known_provider)
    manifest = parse_manifest(
        manifest_bytes, provider=provider, delivery_id=delivery_id, dataset_known=dataset_known
    )
    for entry in manifest.files:
        if provider not in dataset_providers(entry.dataset):
            raise DeliveryRejected(
                Reason.PROVIDER_NOT_AUTHORISED,
                f"Provider {provider} is not registered to deliver dataset {entry.dataset}: the hub's "
                "dataset registry names the providers allowed for each dataset.",
                file=entry.name,
            )
    check_local_names(manifest)
    return VerifiedManifest(manifest, hashlib.sha256(manifest_bytes).hexdigest(), signer)


def plaintext_name(entry: FileEntry) -> str:
    name = entry.name
    return name[: -len(ENCRYPTED_SUFFIX)] if name.endswith(ENCRYPTED_SUFFIX) else name + ".plain"


def check_local_names(manifest: Manifest) -> None:
    """Refuse two files that would be written under the same local name (``x.plain.hdhenc`` and ``x``)."""
    seen: set[str] = set()
    for entry in manifest.files:
        local = plaintext_name(entry)
        if local in seen:
            raise DeliveryRejected(
                Reason.BAD_NAME,
                "Two files of the manifest would be stored under the same name once decrypted "
                "(a name ending in .hdhenc and the same name without it plus .plain): rename one.",
                file=entry.name,
            )
        seen.add(local)


def receive_file(
    source: DeliverySource, entry: FileEntry, keyring: HubKeyRing, destination: Path
) -> DecryptionResult:
    """Decrypt one file to ``destination`` (owner-only), renamed there only once fully verified."""
    size = source.size(entry.name)
    if size is None:
        raise DeliveryRejected(
            Reason.MISSING_FILE, "A file listed in the manifest is missing.", file=entry.name
        )
    if size != entry.ciphertext_bytes:
        raise DeliveryRejected(
            Reason.SIZE_MISMATCH,
            f"The file holds {size} bytes; the manifest says {entry.ciphertext_bytes}.",
            file=entry.name,
        )
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    try:
        with (
            os.fdopen(descriptor, "wb", buffering=1 << 20) as sink,
            source.open_stream(entry.name, size) as stream,
        ):
            try:
                result = decrypt_stream(stream, sink, keyring.get)
            except DeliveryRejected as rejection:
                rejection.file = entry.name
                raise
        _check_against_manifest(result, entry)
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)
    return result


def _check_against_manifest(result: DecryptionResult, entry: FileEntry) -> None:
    if result.ciphertext_bytes != entry.ciphertext_bytes:
        raise DeliveryRejected(
            Reason.SIZE_MISMATCH,
            f"{result.ciphertext_bytes} encrypted bytes were read; the manifest says "
            f"{entry.ciphertext_bytes}.",
            file=entry.name,
        )
    if result.ciphertext_sha256 != entry.ciphertext_sha256.lower():
        raise DeliveryRejected(
            Reason.DIGEST_MISMATCH,
            "The encrypted file's SHA-256 differs from the manifest's ciphertext_sha256.",
            file=entry.name,
        )
    if result.plaintext_sha256 != entry.plaintext_sha256.lower():
        raise DeliveryRejected(
            Reason.DIGEST_MISMATCH,
            "The decrypted content's SHA-256 differs from the manifest's plaintext_sha256.",
            file=entry.name,
        )
