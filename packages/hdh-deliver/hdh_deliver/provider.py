"""The provider side: turn CSV or Parquet files into a signed, encrypted delivery and upload it."""

from __future__ import annotations

import csv
import gzip
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from hdh_deliver.envelope import DEFAULT_SEGMENT_SIZE, encrypt_stream
from hdh_deliver.manifest import CSV, PARQUET, FileEntry, Manifest, sign, utc_timestamp
from hdh_deliver.names import (
    ENCRYPTED_SUFFIX,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    check_delivery_names,
    check_file_name,
)
from hdh_deliver.streams import HashingWriter, sha256_file
from hdh_deliver.transfer import SftpSession


@dataclass(frozen=True)
class SourceFile:
    """A file to deliver. CSV (``.csv`` or already gzipped ``.csv.gz``) or Parquet (``.parquet``)."""

    path: Path
    dataset: str
    encoding: str = "utf-8"
    delimiter: str = ";"
    gzip: bool = True

    @property
    def is_parquet(self) -> bool:
        return self.path.suffix.lower() == ".parquet"

    @property
    def already_gzipped(self) -> bool:
        return self.path.name.lower().endswith(".gz")


@dataclass(frozen=True)
class PreparedDelivery:
    directory: Path
    manifest: Manifest
    manifest_bytes: bytes


def count_rows(source: SourceFile) -> int:
    """Data rows (header excluded), counted by a CSV parser so quoted line breaks are right.

    The parser reads the file the way the hub's DuckDB loader does (blank lines
    skipped, a UTF-8 byte-order mark ignored, malformed quoting refused), with
    the standard library only: a provider installs nothing but this package.
    """
    if source.is_parquet:
        return _parquet_rows(source.path)
    encoding = "utf-8-sig" if source.encoding == "utf-8" else source.encoding
    opener = gzip.open if source.already_gzipped else open
    with opener(source.path, "rt", encoding=encoding, newline="") as text:
        records = csv.reader(text, delimiter=source.delimiter, quotechar='"', doublequote=True, strict=True)
        # map/sum keep the per-record work in C; an empty record is a blank line.
        return max(sum(map(bool, records)) - 1, 0)


def _parquet_rows(path: Path) -> int:
    """The row count from the Parquet footer (pyarrow, the optional ``hdh-deliver[parquet]`` extra)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise SystemExit(
            f"{path.name}: delivering Parquet needs pyarrow: pip install 'hdh-deliver[parquet]'"
        ) from error
    return pq.ParquetFile(path).metadata.num_rows


def _plaintext(source: SourceFile, scratch: Path) -> tuple[Path, str]:
    """The bytes to encrypt and their compression: CSV is gzipped unless asked not to be."""
    if source.is_parquet:
        return source.path, "none"
    if source.already_gzipped:
        return source.path, "gzip"
    if not source.gzip:
        return source.path, "none"
    compressed = scratch / (source.path.name + ".gz")
    with open(source.path, "rb") as raw, gzip.open(compressed, "wb", compresslevel=6) as out:
        shutil.copyfileobj(raw, out, 1 << 20)
    return compressed, "gzip"


def _encrypted_name(source: SourceFile, compression: str) -> str:
    name = source.path.name
    if compression == "gzip" and not name.lower().endswith(".gz"):
        name += ".gz"
    return name + ENCRYPTED_SUFFIX


def prepare_delivery(
    sources: Sequence[SourceFile],
    out_dir: Path,
    *,
    provider: str,
    delivery_id: str,
    hub_public_key: rsa.RSAPublicKey,
    signing_key: ed25519.Ed25519PrivateKey,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> PreparedDelivery:
    """Write ``<out_dir>/<encrypted files>``, ``manifest.json`` and ``manifest.json.sig``."""
    check_delivery_names(provider, delivery_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    with tempfile.TemporaryDirectory(prefix="hdh-deliver-") as scratch:
        for source in sources:
            plaintext, compression = _plaintext(source, Path(scratch))
            name = _encrypted_name(source, compression)
            check_file_name(name)
            with open(plaintext, "rb") as src, open(out_dir / name, "wb") as dst:
                sink = HashingWriter(dst)
                encrypt_stream(src, sink, hub_public_key, segment_size=segment_size)
            csv_fields = (
                {} if source.is_parquet else {"encoding": source.encoding, "delimiter": source.delimiter}
            )
            entries.append(
                FileEntry(
                    name=name,
                    dataset=source.dataset,
                    media_type=PARQUET if source.is_parquet else CSV,
                    compression=compression,
                    rows=count_rows(source),
                    plaintext_sha256=sha256_file(plaintext),
                    ciphertext_sha256=sink.hexdigest(),
                    ciphertext_bytes=sink.bytes,
                    **csv_fields,
                )
            )
    manifest = Manifest(provider, delivery_id, utc_timestamp(), tuple(entries))
    manifest_bytes = manifest.to_bytes()
    (out_dir / MANIFEST_NAME).write_bytes(manifest_bytes)
    (out_dir / SIGNATURE_NAME).write_bytes(sign(manifest_bytes, signing_key))
    return PreparedDelivery(out_dir, manifest, manifest_bytes)


def upload_delivery(
    session: SftpSession, prepared: PreparedDelivery, inbox: str, *, data_files: Sequence[str] = ()
) -> str:
    """Upload data files, then the manifest, then the signature, each as ``.part`` then renamed.

    ``data_files`` defaults to the manifest's files; returns the remote folder.
    """
    manifest = prepared.manifest
    remote = f"{inbox.rstrip('/')}/{manifest.provider}/{manifest.delivery_id}"
    session.makedirs(remote)
    for name in [*(data_files or [e.name for e in manifest.files]), MANIFEST_NAME, SIGNATURE_NAME]:
        with open(prepared.directory / name, "rb") as handle:
            session.upload(handle, f"{remote}/{name}")
    return remote
