"""``manifest.json`` and its detached Ed25519 signature: build, sign, verify, parse strictly."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from hdh_deliver.errors import DeliveryRejected, Reason
from hdh_deliver.keys import Provider
from hdh_deliver.names import check_delivery_names, check_file_name

FORMAT = "hdh-delivery/1"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")
_MANIFEST_FIELDS = frozenset({"format", "provider", "delivery_id", "created_at", "files"})
_COMMON_FILE_FIELDS = frozenset(
    {
        "name",
        "dataset",
        "media_type",
        "compression",
        "rows",
        "plaintext_sha256",
        "ciphertext_sha256",
        "ciphertext_bytes",
    }
)
_CSV_FILE_FIELDS = _COMMON_FILE_FIELDS | {"encoding", "delimiter"}
# Characters that cannot separate CSV fields without making the file ambiguous.
_FORBIDDEN_DELIMITERS = frozenset('"\r\n')


@dataclass(frozen=True)
class FileEntry:
    name: str
    dataset: str
    media_type: str
    compression: str
    rows: int
    plaintext_sha256: str
    ciphertext_sha256: str
    ciphertext_bytes: int
    encoding: str | None = None
    delimiter: str | None = None

    @property
    def is_csv(self) -> bool:
        return self.media_type == CSV

    def as_json(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class Manifest:
    provider: str
    delivery_id: str
    created_at: str
    files: tuple[FileEntry, ...]

    def to_bytes(self) -> bytes:
        """The canonical UTF-8 JSON a provider signs (any valid JSON is accepted on receipt)."""
        document = {
            "format": FORMAT,
            "provider": self.provider,
            "delivery_id": self.delivery_id,
            "created_at": self.created_at,
            "files": [entry.as_json() for entry in self.files],
        }
        return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def utc_timestamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign(manifest_bytes: bytes, signing_key: ed25519.Ed25519PrivateKey) -> bytes:
    """The content of ``manifest.json.sig``: base64 of the signature, one line."""
    return base64.b64encode(signing_key.sign(manifest_bytes)) + b"\n"


def verify_signature(manifest_bytes: bytes, signature_file: bytes, provider: Provider) -> str:
    """Return the key_id of the provider's live key that signed the manifest."""
    text = signature_file[:-1] if signature_file.endswith(b"\n") else signature_file
    try:
        signature = base64.b64decode(text, validate=True)
    except binascii.Error:
        signature = b""
    if len(signature) != 64:
        raise DeliveryRejected(
            Reason.BAD_SIGNATURE, "manifest.json.sig is not the base64 of a 64-byte Ed25519 signature."
        )
    for kid, public_key in provider.signing_keys.items():
        try:
            public_key.verify(signature, manifest_bytes)
        except InvalidSignature:
            continue
        return kid
    raise DeliveryRejected(
        Reason.BAD_SIGNATURE,
        "The manifest's signature does not verify with any live signing key of this provider: "
        "the manifest was altered or signed with a key the hub does not know.",
    )


def _bad(message: str, file: str | None = None) -> DeliveryRejected:
    return DeliveryRejected(Reason.BAD_MANIFEST, message, file=file)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_manifest(
    manifest_bytes: bytes,
    *,
    provider: str,
    delivery_id: str,
    dataset_known: Callable[[str], bool],
) -> Manifest:
    """Parse a manifest, refusing anything hdh-delivery/1 does not allow."""
    check_delivery_names(provider, delivery_id)
    try:
        document = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise _bad("manifest.json is not UTF-8 JSON.") from error
    if not isinstance(document, Mapping) or set(document) != _MANIFEST_FIELDS:
        raise _bad(
            "manifest.json must be an object with exactly format, provider, delivery_id, "
            "created_at and files."
        )
    if document["format"] != FORMAT:
        raise _bad(f"The manifest's format is not {FORMAT}.")
    if document["provider"] != provider or document["delivery_id"] != delivery_id:
        raise _bad("The manifest's provider or delivery_id differs from its folder names.")
    created_at = document["created_at"]
    if not isinstance(created_at, str) or not _TIMESTAMP.fullmatch(created_at):
        raise _bad("created_at is not a UTC timestamp such as 2026-11-27T22:04:11Z.")
    files = document["files"]
    if not isinstance(files, Sequence) or isinstance(files, str) or not files:
        raise _bad("files must be a non-empty list.")
    entries = tuple(_parse_file(entry, dataset_known) for entry in files)
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise _bad("A file is listed twice in the manifest.")
    return Manifest(provider, delivery_id, created_at, entries)


def _parse_file(entry: object, dataset_known: Callable[[str], bool]) -> FileEntry:
    if not isinstance(entry, Mapping):
        raise _bad("Every entry of files must be an object.")
    check_file_name(entry.get("name"))
    name = entry["name"]
    media_type = entry.get("media_type")
    expected = _CSV_FILE_FIELDS if media_type == CSV else _COMMON_FILE_FIELDS
    if media_type not in (CSV, PARQUET):
        raise _bad(f"media_type must be {CSV} or {PARQUET}.", name)
    if set(entry) != expected:
        # Only the specification's field names are repeated; a field it does not define is counted.
        missing, extra = sorted(expected - set(entry)), len(set(entry) - expected)
        raise _bad(f"File fields are wrong (missing: {missing}, {extra} field(s) not allowed).", name)
    dataset = entry["dataset"]
    if not isinstance(dataset, str) or not dataset_known(dataset):
        raise DeliveryRejected(
            Reason.UNKNOWN_DATASET,
            "The file names a dataset that the hub's dataset registry does not know.",
            file=name,
        )
    if media_type == CSV:
        if entry["compression"] not in ("gzip", "none"):
            raise _bad("compression of a CSV file must be gzip or none.", name)
        if entry["encoding"] not in ("utf-8", "latin-1"):
            raise _bad("encoding must be utf-8 or latin-1.", name)
        delimiter = entry["delimiter"]
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in _FORBIDDEN_DELIMITERS:
            raise _bad("delimiter must be one character other than a quote or a line break.", name)
    elif entry["compression"] != "none":
        raise _bad("compression of a Parquet file must be none.", name)
    if not (_is_count(entry["rows"]) and _is_count(entry["ciphertext_bytes"])):
        raise _bad("rows and ciphertext_bytes must be non-negative integers.", name)
    for digest in ("plaintext_sha256", "ciphertext_sha256"):
        if not isinstance(entry[digest], str) or not _HEX64.fullmatch(entry[digest]):
            raise _bad(f"{digest} must be 64 hex digits.", name)
    return FileEntry(**{key: entry[key] for key in expected})
