"""A delivery from a real OpenSSH SFTP server to raw tables, or to quarantine with the right reason."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deliveries import (
    SEGMENT,
    as_db_rows,
    build,
    columns_of,
    edit_manifest,
    ingest,
    raw_rows,
    rejected,
    sample_rows,
    upload,
    write_csv,
)

from hdh_deliver.errors import Reason
from hdh_deliver.provider import SourceFile


@pytest.mark.parametrize(
    ("encoding", "gzipped"), [("utf-8", True), ("utf-8", False), ("latin-1", True), ("latin-1", False)]
)
def test_csv_round_trip(tmp_path, keys, hub, sftp_settings, inbox, encoding, gzipped):
    rows = sample_rows("IR_BEN_R", 300)
    source = write_csv(tmp_path / "IR_BEN_R.csv", "IR_BEN_R", rows, encoding=encoding)
    prepared = build(
        tmp_path, keys, "cnam", "d-001", [SourceFile(source, "IR_BEN_R", encoding, gzip=gzipped)]
    )
    upload(sftp_settings, prepared, inbox)
    report = ingest(sftp_settings, inbox, hub, "cnam", "d-001")
    assert report.rows_by_dataset() == {"IR_BEN_R": 300}
    assert raw_rows(hub.storage, "IR_BEN_R") == as_db_rows(rows)
    lineage = raw_rows(hub.storage, "IR_BEN_R", with_lineage=True)[0][-3:]
    assert lineage == ("cnam", "d-001", "IR_BEN_R")


@pytest.mark.parametrize("multiple", [0, 1, 2, 5])
def test_many_segments_and_exact_multiples(tmp_path, keys, hub, sftp_settings, inbox, multiple):
    """Files spanning many segments, including plaintexts of exactly k × segment_size bytes."""
    columns = columns_of("ER_PRS_F")
    header = (";".join(columns) + "\n").encode()
    line = (";".join(["x"] * len(columns)) + "\n").encode()
    if multiple:
        # Pad the last row's first value so the file is exactly multiple × SEGMENT bytes.
        target = multiple * SEGMENT
        count = (target - len(header)) // len(line)
        remainder = target - len(header) - count * len(line)
        body = line * (count - 1) + (b"x" * (remainder + 1)) + line[1:]
    else:
        count, body = 20000, line * 20000
    data = header + body
    assert not multiple or len(data) == multiple * SEGMENT
    path = tmp_path / "ER_PRS_F.csv"
    path.write_bytes(data)
    prepared = build(tmp_path, keys, "cnam", f"seg-{multiple}", [SourceFile(path, "ER_PRS_F", gzip=False)])
    upload(sftp_settings, prepared, inbox)
    report = ingest(sftp_settings, inbox, hub, "cnam", f"seg-{multiple}")
    assert report.files[0].segments == max(1, -(-len(data) // SEGMENT))
    assert report.rows_by_dataset() == {"ER_PRS_F": count}
    received = hub.storage.received_dir("cnam", f"seg-{multiple}") / "ER_PRS_F.csv"
    assert received.read_bytes() == data


def test_parquet_and_empty_files(tmp_path, keys, hub, sftp_settings, inbox):
    columns = columns_of("ER_PHA_F")
    table = pa.table({c: [f"{c}-{i}" for i in range(50)] for c in columns})
    pq.write_table(table, tmp_path / "ER_PHA_F.parquet")
    empty_csv = write_csv(tmp_path / "T_MCO25B.csv", "T_MCO25B", [])
    empty_parquet = tmp_path / "T_MCO25C.parquet"
    pq.write_table(pa.table({c: pa.array([], pa.string()) for c in columns_of("T_MCO25C")}), empty_parquet)
    prepared = build(
        tmp_path,
        keys,
        "cnam",
        "mixed",
        [
            SourceFile(tmp_path / "ER_PHA_F.parquet", "ER_PHA_F"),
            SourceFile(empty_csv, "T_MCO25B"),
            SourceFile(empty_parquet, "T_MCO25C"),
        ],
    )
    assert [f.compression for f in prepared.manifest.files] == ["none", "gzip", "none"]
    upload(sftp_settings, prepared, inbox)
    report = ingest(sftp_settings, inbox, hub, "cnam", "mixed")
    assert report.rows_by_dataset() == {"ER_PHA_F": 50, "T_MCOaaB": 0, "T_MCOaaC": 0}
    assert sorted(raw_rows(hub.storage, "ER_PHA_F")) == sorted(tuple(r.values()) for r in table.to_pylist())


def test_private_storage_is_owner_only(tmp_path, keys, hub, sftp_settings, inbox):
    source = write_csv(tmp_path / "IR_BEN_R.csv", "IR_BEN_R", sample_rows("IR_BEN_R", 5))
    upload(sftp_settings, build(tmp_path, keys, "cnam", "perm", [SourceFile(source, "IR_BEN_R")]), inbox)
    ingest(sftp_settings, inbox, hub, "cnam", "perm")
    for path in hub.storage.root.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


def test_rerun_is_idempotent(tmp_path, keys, hub, sftp_settings, inbox):
    source = write_csv(tmp_path / "IR_BEN_R.csv", "IR_BEN_R", sample_rows("IR_BEN_R", 10))
    upload(sftp_settings, build(tmp_path, keys, "cnam", "again", [SourceFile(source, "IR_BEN_R")]), inbox)
    first = ingest(sftp_settings, inbox, hub, "cnam", "again")
    second = ingest(sftp_settings, inbox, hub, "cnam", "again")
    assert second.already_loaded and second.manifest_sha256 == first.manifest_sha256
    assert len(raw_rows(hub.storage, "IR_BEN_R")) == 10


# --- every refusal in the specification ------------------------------------------------------


@pytest.fixture
def good(tmp_path, keys):
    """A valid two-file delivery, prepared but not uploaded, for a test to break."""
    ben = write_csv(tmp_path / "IR_BEN_R.csv", "IR_BEN_R", sample_rows("IR_BEN_R", 40))
    prs = write_csv(tmp_path / "ER_PRS_F.csv", "ER_PRS_F", sample_rows("ER_PRS_F", 3000))
    return build(tmp_path, keys, "cnam", "bad-1", [SourceFile(ben, "IR_BEN_R"), SourceFile(prs, "ER_PRS_F")])


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def second_file(prepared) -> Path:
    return prepared.directory / prepared.manifest.files[1].name


def test_bad_signature_edited_manifest(good, keys, hub, sftp_settings, inbox):
    edit_manifest(good, lambda d: d["files"][0].update(rows=41), signer=None)
    upload(sftp_settings, good, inbox)
    assert rejected(sftp_settings, inbox, hub, "cnam", "bad-1").reason == Reason.BAD_SIGNATURE


def test_signed_with_unregistered_key(good, keys, hub, sftp_settings, inbox):
    edit_manifest(good, lambda d: None, keys=keys, signer="stranger")
    upload(sftp_settings, good, inbox)
    assert rejected(sftp_settings, inbox, hub, "cnam", "bad-1").reason == Reason.BAD_SIGNATURE


def test_garbage_signature(good, keys, hub, sftp_settings, inbox):
    (good.directory / "manifest.json.sig").write_text("not base64!\n")
    upload(sftp_settings, good, inbox)
    assert rejected(sftp_settings, inbox, hub, "cnam", "bad-1").reason == Reason.BAD_SIGNATURE


def test_unknown_provider(tmp_path, keys, hub, sftp_settings, inbox):
    source = write_csv(tmp_path / "IR_BEN_R.csv", "IR_BEN_R", sample_rows("IR_BEN_R", 3))
    prepared = build(tmp_path, keys, "nobody", "x1", [SourceFile(source, "IR_BEN_R")])
    upload(sftp_settings, prepared, inbox)
    assert rejected(sftp_settings, inbox, hub, "nobody", "x1").reason == Reason.UNKNOWN_PROVIDER


def test_unknown_hub_key(tmp_path, keys, hub, sftp_settings, inbox):
    from hdh_deliver.keys import generate_hub_key, load_public_key

    other = generate_hub_key(tmp_path / "other-hub", bits=3072)
    source = write_csv(tmp_path / "IR_BEN_R.csv", "IR_BEN_R", sample_rows("IR_BEN_R", 3))
    from hdh_deliver.provider import prepare_delivery

    prepared = prepare_delivery(
        [SourceFile(source, "IR_BEN_R")],
        tmp_path / "out",
        provider="cnam",
        delivery_id="bad-1",
        hub_public_key=load_public_key(other.public_key_file.read_bytes()),
        signing_key=keys.signing(),
    )
    upload(sftp_settings, prepared, inbox)
    assert rejected(sftp_settings, inbox, hub, "cnam", "bad-1").reason == Reason.UNKNOWN_KEY


def test_flipped_ciphertext_byte(good, keys, hub, sftp_settings, inbox):
    flip_byte(second_file(good), -100)
    upload(sftp_settings, good, inbox)
    error = rejected(sftp_settings, inbox, hub, "cnam", "bad-1")
    assert error.reason == Reason.AUTH_FAILED and error.file == good.manifest.files[1].name


def _truncate_and_resign(good, keys, cut_to):
    """Cut the second file, then sign a manifest that agrees with it: only the crypto can object."""
    import hashlib

    path = second_file(good)
    data = path.read_bytes()[: cut_to(path)]
    path.write_bytes(data)
    edit_manifest(
        good,
        lambda d: d["files"][1].update(
            ciphertext_bytes=len(data), ciphertext_sha256=hashlib.sha256(data).hexdigest()
        ),
        keys=keys,
    )


def test_truncated_at_segment_boundary(good, keys, hub, sftp_settings, inbox):
    header_len = lambda p: 12 + int.from_bytes(p.read_bytes()[8:12], "big")  # noqa: E731
    _truncate_and_resign(good, keys, lambda p: header_len(p) + SEGMENT + 16)
    upload(sftp_settings, good, inbox)
    assert rejected(sftp_settings, inbox, hub, "cnam", "bad-1").reason == Reason.TRUNCATED


def test_truncated_file_with_honest_manifest_is_a_size_mismatch(good, keys, hub, sftp_settings, inbox):
    path = second_file(good)
    path.write_bytes(path.read_bytes()[:-500])
    upload(sftp_settings, good, inbox)
    assert rejected(sftp_settings, inbox, hub, "cnam", "bad-1").reason == Reason.SIZE_MISMATCH


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d["files"][1].update(ciphertext_sha256="0" * 64), Reason.DIGEST_MISMATCH),
        (lambda d: d["files"][1].update(plaintext_sha256="0" * 64), Reason.DIGEST_MISMATCH),
        (
            lambda d: d["files"][1].update(ciphertext_bytes=d["files"][1]["ciphertext_bytes"] + 1),
            Reason.SIZE_MISMATCH,
        ),
        (lambda d: d["files"][1].update(rows=d["files"][1]["rows"] - 1), Reason.ROW_COUNT_MISMATCH),
        (lambda d: d["files"][1].update(name="missing.csv.gz.hdhenc"), Reason.MISSING_FILE),
        (lambda d: d["files"][1].update(name="../escape.hdhenc"), Reason.BAD_NAME),
        (lambda d: d["files"][1].update(name="sub/dir.hdhenc"), Reason.BAD_NAME),
        (lambda d: d["files"][1].update(name="x.hdhenc.part"), Reason.BAD_NAME),
        (lambda d: d["files"][1].update(dataset="NOT_A_TABLE"), Reason.UNKNOWN_DATASET),
        (lambda d: d.update(format="hdh-delivery/2"), Reason.BAD_MANIFEST),
        (lambda d: d.update(delivery_id="other"), Reason.BAD_MANIFEST),
        (lambda d: d["files"][1].update(encoding="utf-16"), Reason.BAD_MANIFEST),
        (lambda d: d["files"][1].pop("delimiter"), Reason.BAD_MANIFEST),
        (lambda d: d["files"][0].update(extra=1), Reason.BAD_MANIFEST),
    ],
)
def test_manifest_disagreements(good, keys, hub, sftp_settings, inbox, change, reason):
    edit_manifest(good, change, keys=keys)
    upload(sftp_settings, good, inbox)
    assert rejected(sftp_settings, inbox, hub, "cnam", "bad-1").reason == reason


def test_missing_data_file(good, keys, hub, sftp_settings, inbox):
    names = [good.manifest.files[0].name, "manifest.json", "manifest.json.sig"]
    upload(sftp_settings, good, inbox, names=names)
    assert rejected(sftp_settings, inbox, hub, "cnam", "bad-1").reason == Reason.MISSING_FILE


@pytest.mark.parametrize(
    ("columns", "reason"),
    [
        (lambda cols: [*cols, "NOT_DECLARED"], Reason.UNKNOWN_COLUMN),
        (lambda cols: cols[1:], Reason.MISSING_COLUMN),
    ],
)
def test_header_must_match_the_registry(tmp_path, keys, hub, sftp_settings, inbox, columns, reason):
    header = columns(columns_of("IR_BEN_R"))
    path = write_csv(tmp_path / "IR_BEN_R.csv", "IR_BEN_R", [["v"] * len(header)] * 3, columns=header)
    upload(sftp_settings, build(tmp_path, keys, "cnam", "hdr", [SourceFile(path, "IR_BEN_R")]), inbox)
    assert rejected(sftp_settings, inbox, hub, "cnam", "hdr").reason == reason


def test_unparseable_csv(tmp_path, keys, hub, sftp_settings, inbox):
    columns = columns_of("IR_BEN_R")
    path = tmp_path / "IR_BEN_R.csv"
    path.write_text(";".join(columns) + "\n" + ";".join(["a"] * (len(columns) + 2)) + "\n")
    upload(sftp_settings, build(tmp_path, keys, "cnam", "csv", [SourceFile(path, "IR_BEN_R")]), inbox)
    error = rejected(sftp_settings, inbox, hub, "cnam", "csv")
    assert error.reason in (Reason.BAD_DATA, Reason.ROW_COUNT_MISMATCH)
    assert "a;a" not in error.message  # never echoes the data


def test_gzip_declared_but_not_gzipped(tmp_path, keys, hub, sftp_settings, inbox):
    path = write_csv(tmp_path / "IR_BEN_R.csv", "IR_BEN_R", sample_rows("IR_BEN_R", 3))
    prepared = build(tmp_path, keys, "cnam", "gz", [SourceFile(path, "IR_BEN_R", gzip=False)])
    edit_manifest(prepared, lambda d: d["files"][0].update(compression="gzip"), keys=keys)
    upload(sftp_settings, prepared, inbox)
    assert rejected(sftp_settings, inbox, hub, "cnam", "gz").reason == Reason.BAD_DATA


def test_failed_delivery_leaves_no_trace_and_a_corrected_one_loads(
    good, tmp_path, keys, hub, sftp_settings, inbox
):
    flip_byte(second_file(good), -1)
    upload(sftp_settings, good, inbox)
    rejected(sftp_settings, inbox, hub, "cnam", "bad-1")
    assert raw_rows(hub.storage, "IR_BEN_R") == []
    assert not any((hub.storage.root / "staging").rglob("*.parquet"))
    ben = write_csv(tmp_path / "IR_BEN_R.csv", "IR_BEN_R", sample_rows("IR_BEN_R", 40))
    fixed = build(tmp_path, keys, "cnam", "bad-1-fixed", [SourceFile(ben, "IR_BEN_R")])
    upload(sftp_settings, fixed, inbox)
    ingest(sftp_settings, inbox, hub, "cnam", "bad-1-fixed")
    assert len(raw_rows(hub.storage, "IR_BEN_R")) == 40
    assert os.path.exists(hub.storage.quarantine_file("cnam", "bad-1"))
