"""Building, tampering with and uploading test deliveries, as a provider would."""

from __future__ import annotations

import csv
import functools
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pytest

from hdh_deliver.errors import DeliveryRejected
from hdh_deliver.manifest import sign
from hdh_deliver.names import MANIFEST_NAME, SIGNATURE_NAME
from hdh_deliver.provider import PreparedDelivery, SourceFile, prepare_delivery, upload_delivery
from hdh_deliver.transfer import SftpSettings, sftp_session
from hdh_pipelines.ingestion.partitions import delivery_partition_key
from hdh_pipelines.ingestion.pipeline import ingest_delivery
from hdh_pipelines.ingestion.receive import SftpDeliverySource
from hdh_pipelines.ingestion.storage import HubStorage
from hdh_pipelines.open_science.synthetic import generate_snds
from hdh_pipelines.registry import default_registry

SEGMENT = 65536


def columns_of(dataset: str) -> list[str]:
    """The dataset's own columns: a curated dataset's hand-written ones, without its overlay's."""
    return [f.name for f in default_registry().resolve(dataset).own_fields]


def sample_rows(dataset: str, count: int, *, accent: str = "é") -> list[list[str]]:
    """Text rows with one distinct value per cell, non-ASCII included; some cells empty."""
    columns = columns_of(dataset)
    return [
        [("" if (r + c) % 7 == 3 else f'{accent}{r}-{c};"q"') for c in range(len(columns))]
        for r in range(count)
    ]


@functools.cache
def _synthetic_tables() -> dict[str, list[list[str]]]:
    with tempfile.TemporaryDirectory() as folder:
        paths = generate_snds(Path(folder), persons=200, year=2025, seed=7)
        tables = {}
        for dataset, path in paths.items():
            with open(path, encoding="utf-8", newline="") as handle:
                tables[dataset] = list(csv.reader(handle, delimiter=";"))[1:]
        return tables


def valid_rows(dataset: str, count: int) -> list[list[str]]:
    """The first ``count`` rows of a synthetic table that passes its quality suite."""
    rows = _synthetic_tables()[dataset]
    if count > len(rows):
        raise ValueError(f"The synthetic {dataset} has only {len(rows)} rows.")
    return rows[:count]


def write_csv(
    path: Path,
    dataset: str,
    rows: Sequence[Sequence[str]],
    *,
    encoding: str = "utf-8",
    delimiter: str = ";",
    columns: Sequence[str] | None = None,
) -> Path:
    with open(path, "w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter, quotechar='"', lineterminator="\n")
        writer.writerow(columns or columns_of(dataset))
        writer.writerows(rows)
    return path


def build(
    folder: Path,
    keys,
    provider: str,
    delivery_id: str,
    sources: Sequence[SourceFile],
    *,
    signer: str = "cnam",
    segment_size: int = SEGMENT,
) -> PreparedDelivery:
    return prepare_delivery(
        sources,
        folder / f"{provider}-{delivery_id}",
        provider=provider,
        delivery_id=delivery_id,
        hub_public_key=keys.hub_public(),
        signing_key=keys.signing(signer),
        segment_size=segment_size,
    )


def edit_manifest(prepared: PreparedDelivery, change, *, keys=None, signer: str | None = "cnam") -> None:
    """Rewrite manifest.json with ``change(document)``; re-sign it unless ``signer`` is None."""
    document = json.loads(prepared.manifest_bytes)
    change(document)
    data = json.dumps(document, indent=1).encode()
    (prepared.directory / MANIFEST_NAME).write_bytes(data)
    if signer is not None:
        (prepared.directory / SIGNATURE_NAME).write_bytes(sign(data, keys.signing(signer)))


def upload(
    settings: SftpSettings, prepared: PreparedDelivery, inbox: str, *, names: Sequence[str] | None = None
) -> None:
    """Upload the delivery as prepared on disk (manifest and signature as they are there)."""
    remote = f"{inbox}/{prepared.manifest.provider}/{prepared.manifest.delivery_id}"
    with sftp_session(settings) as session:
        session.makedirs(remote)
        if names is None:
            upload_delivery(session, prepared, inbox)
            return
        for name in names:
            with open(prepared.directory / name, "rb") as handle:
                session.upload(handle, f"{remote}/{name}")


def deliver(
    folder: Path, keys, settings: SftpSettings, inbox: str, delivery_id: str, rows: int = 20, **upload_args
) -> PreparedDelivery:
    """A valid IR_BEN_R delivery of ``rows`` rows by cnam, prepared in ``folder``, uploaded to ``inbox``."""
    path = write_csv(folder / f"{delivery_id}.csv", "IR_BEN_R", valid_rows("IR_BEN_R", rows))
    prepared = build(folder, keys, "cnam", delivery_id, [SourceFile(path, "IR_BEN_R")])
    upload(settings, prepared, inbox, **upload_args)
    return prepared


def deliver_tables(folder: Path, keys, settings: SftpSettings, inbox: str, delivery_id: str, tables) -> None:
    """A cnam delivery of ``tables`` (dataset: rows, written as CSV in ``folder``), uploaded to ``inbox``."""
    sources = [
        SourceFile(write_csv(folder / f"{delivery_id}-{dataset}.csv", dataset, rows), dataset)
        for dataset, rows in tables.items()
    ]
    upload(settings, build(folder, keys, "cnam", delivery_id, sources), inbox)


def raw_rows(storage: HubStorage, dataset: str, *, with_lineage: bool = False) -> list[tuple]:
    columns = columns_of(dataset)
    if with_lineage:
        columns += ["hdh_provider", "hdh_delivery_id", "hdh_dataset"]
    selected = ", ".join(f'"{c}"' for c in columns)
    with duckdb.connect() as connection:
        try:
            return connection.execute(
                f"SELECT {selected} FROM read_parquet(?)",
                [storage.raw_glob(default_registry().resolve(dataset).name)],
            ).fetchall()
        except duckdb.IOException:
            return []


def as_db_rows(rows: Sequence[Sequence[str]]) -> list[tuple]:
    """CSV text as DuckDB reads it back: empty fields are NULL."""
    return [tuple(value if value != "" else None for value in row) for row in rows]


# The hub's side: what ingestion makes of a delivery, and inboxes to scan.


def ingest(settings, inbox, hub, provider, delivery_id):
    """Ingest one delivery of the SFTP inbox, as the ingestion step does."""
    with sftp_session(settings) as session:
        return ingest_delivery(
            SftpDeliverySource(session, f"{inbox}/{provider}/{delivery_id}"), provider, delivery_id, hub
        )


def rejected(settings, inbox, hub, provider, delivery_id) -> DeliveryRejected:
    """The refusal of a delivery, which must leave its quarantine record and nothing else."""
    with pytest.raises(DeliveryRejected) as caught:
        ingest(settings, inbox, hub, provider, delivery_id)
    record = json.loads(hub.storage.quarantine_file(provider, delivery_id).read_text())
    assert record["reason"] == caught.value.reason and record["message"]
    assert not hub.storage.raw_dir(provider, delivery_id).exists()
    assert not hub.storage.received_dir(provider, delivery_id).exists()
    return caught.value


def populate(inbox: Path, provider: str, count: int, *, signed: bool = True) -> list[str]:
    """``count`` delivery folders in a local inbox, signed or still uploading; their partition keys."""
    ids = []
    for index in range(count):
        folder = inbox / provider / f"d{index:05d}"
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text("{}")
        (folder / ("manifest.json.sig" if signed else "manifest.json.sig.part")).write_text("x")
        ids.append(delivery_partition_key(provider, folder.name))
    return ids


def with_duplicate_key(rows):
    """The rows with the first one again: a duplicate primary key."""
    return [*rows, list(rows[0])]
