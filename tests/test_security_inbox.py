"""The inbox and the hub's private storage against hostile or faulty deliveries (issue 13 §5).

Each test first builds what a provider (or a crash) can leave on the real
OpenSSH server or in the private storage, then checks the hub's answer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
from deliveries import (
    build,
    edit_manifest,
    ingest,
    populate,
    raw_rows,
    rejected,
    sample_rows,
    upload,
    write_csv,
)

from hdh_deliver.errors import DeliveryRejected, Reason
from hdh_deliver.keys import HubKeyRing, KeyConfigError
from hdh_deliver.names import MANIFEST_NAME, SIGNATURE_NAME
from hdh_deliver.provider import SourceFile
from hdh_deliver.transfer import SftpUnavailable, sftp_session
from hdh_pipelines.ingestion.inbox import ScanBudget, scan_inbox
from hdh_pipelines.ingestion.partitions import MANIFEST_DIGEST_TAG, delivery_partition_key, delivery_run_tags
from hdh_pipelines.ingestion.pipeline import ingest_delivery
from hdh_pipelines.ingestion.receive import LocalDeliverySource, SftpDeliverySource
from hdh_pipelines.ingestion.storage import HubStorage
from hdh_pipelines.open_science.errors import OpenDataRefused
from hdh_pipelines.open_science.indicators import IndicatorSpec


def _delivery(tmp_path, keys, delivery_id: str, rows: int = 5):
    source = write_csv(tmp_path / f"{delivery_id}.csv", "IR_BEN_R", sample_rows("IR_BEN_R", rows))
    return build(tmp_path, keys, "cnam", delivery_id, [SourceFile(source, "IR_BEN_R")])


# --- symbolic links ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["data", SIGNATURE_NAME, MANIFEST_NAME])
def test_a_symlink_in_a_delivery_is_refused_never_followed(tmp_path, keys, hub, sftp_settings, inbox, which):
    """The link points at a file with exactly the right bytes: following it would load the delivery."""
    prepared = _delivery(tmp_path, keys, "link")
    upload(sftp_settings, prepared, inbox)
    name = prepared.manifest.files[0].name if which == "data" else which
    on_server = Path(inbox) / "cnam" / "link" / name
    elsewhere = tmp_path / "outside-the-delivery"
    shutil.move(on_server, elsewhere)
    on_server.symlink_to(elsewhere)
    refusal = rejected(sftp_settings, inbox, hub, "cnam", "link")
    assert refusal.reason == Reason.BAD_NAME and refusal.file == name
    assert raw_rows(hub.storage, "IR_BEN_R") == []


def test_a_local_source_refuses_symlinks_too(tmp_path):
    (tmp_path / "real").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    source = LocalDeliverySource(tmp_path)
    assert source.size("real") == 1 and source.read_small("real", 10) == b"x"
    for call in (lambda: source.size("link"), lambda: source.read_small("link", 10)):
        with pytest.raises(DeliveryRejected) as caught:
            call()
        assert caught.value.reason == Reason.BAD_NAME


def test_the_sensor_hands_a_symlinked_signature_to_a_run_that_refuses_it(tmp_path, sftp_settings, inbox):
    populate(Path(inbox), "cnam", 1)
    signature = Path(inbox) / "cnam" / "d00000" / SIGNATURE_NAME
    signature.unlink()
    signature.symlink_to("/etc/hostname")
    with sftp_session(sftp_settings) as session:
        scan = scan_inbox(session, inbox, set(), key_of=delivery_partition_key)
    # Found (the run refuses it as bad_name), without a digest: nothing behind the link is hashed.
    assert [(f.delivery_id, f.manifest_sha256) for f in scan.found] == [("d00000", None)]


# --- local names -------------------------------------------------------------------------------


def test_two_files_with_one_local_name_are_refused(tmp_path, keys, hub, sftp_settings, inbox):
    first = write_csv(tmp_path / "a.csv", "IR_BEN_R", sample_rows("IR_BEN_R", 3))
    second = write_csv(tmp_path / "b.csv", "IR_BEN_R", sample_rows("IR_BEN_R", 4, accent="ü"))
    prepared = build(
        tmp_path, keys, "cnam", "twins", [SourceFile(first, "IR_BEN_R"), SourceFile(second, "IR_BEN_R")]
    )
    # "x.plain.hdhenc" decrypts to x.plain; "x" (no .hdhenc) is stored as x.plain too.
    names = ["x.plain.hdhenc", "x"]
    for entry, name in zip(prepared.manifest.files, names, strict=True):
        os.rename(prepared.directory / entry.name, prepared.directory / name)

    def rename(document):
        for entry, name in zip(document["files"], names, strict=True):
            entry["name"] = name

    edit_manifest(prepared, rename, keys=keys)
    upload(sftp_settings, prepared, inbox, names=[*names, MANIFEST_NAME, SIGNATURE_NAME])
    refusal = rejected(sftp_settings, inbox, hub, "cnam", "twins")
    assert refusal.reason == Reason.BAD_NAME and refusal.file == "x"


# --- staging -----------------------------------------------------------------------------------


def test_a_delivery_never_cleans_another_ones_staging(tmp_path):
    """Delivery 2026 once removed the staging of delivery 2026.11 (a prefix glob)."""
    storage = HubStorage(tmp_path / "private").prepare()
    busy = storage.new_staging_dir("cnam", "2026.11")
    (busy / "half-decrypted").write_bytes(b"x")
    storage.remove_leftovers("cnam", "2026")
    storage.new_staging_dir("cnam", "2026")
    assert (busy / "half-decrypted").exists()


def test_crash_leftovers_are_removed_when_the_delivery_runs_again(tmp_path, keys, hub, sftp_settings, inbox):
    upload(sftp_settings, _delivery(tmp_path, keys, "crashed"), inbox)
    storage = hub.storage.prepare()
    killed = storage.new_staging_dir("cnam", "crashed")
    (killed / "plaintext.tmp").write_bytes(b"secret")
    aside = storage.root / "staging" / "replaced" / ("0" * 32)
    aside.mkdir(parents=True)
    ingest(sftp_settings, inbox, hub, "cnam", "crashed")
    assert not killed.exists() and not aside.exists()


# --- private keys ------------------------------------------------------------------------------


def test_a_hub_key_readable_by_others_is_refused(tmp_path, keys):
    exposed = tmp_path / "hub.key.pem"
    shutil.copy(keys.hub.private_key_file, exposed)
    exposed.chmod(0o640)
    ring = tmp_path / "keyring.yaml"
    ring.write_text(f"keys:\n  - file: {exposed}\n")
    with pytest.raises(KeyConfigError, match="owner-only"):
        HubKeyRing.from_file(ring)
    exposed.chmod(0o600)
    assert HubKeyRing.from_file(ring).keys


def test_an_sftp_key_readable_by_others_is_refused(tmp_path, sftp_settings):
    exposed = tmp_path / "id_ed25519"
    shutil.copy(sftp_settings.private_key_file, exposed)
    exposed.chmod(0o644)
    with (
        pytest.raises(SftpUnavailable) as caught,
        sftp_session(dataclasses.replace(sftp_settings, private_key_file=exposed)),
    ):
        pass
    assert caught.value.reason == "client_key_exposed"


# --- fair scanning -----------------------------------------------------------------------------


def test_one_providers_unsigned_flood_does_not_starve_the_others(sftp_settings, inbox):
    root = Path(inbox)
    populate(root, "aaa-flood", 3000, signed=False)
    wanted = set(populate(root, "zzz", 3))
    budget = ScanBudget(max_new=25, max_probes=60, max_seconds=20)
    with sftp_session(sftp_settings) as session:
        scan = scan_inbox(session, inbox, set(), key_of=delivery_partition_key, budget=budget)
        found = {delivery_partition_key(f.provider, f.delivery_id) for f in scan.found}
        assert found == wanted, "the first tick reaches the other provider"
        assert scan.exhausted and set(scan.resume_after) == {"aaa-flood"}
        again = scan_inbox(
            session,
            inbox,
            found,
            key_of=delivery_partition_key,
            budget=budget,
            resume_after=scan.resume_after,
        )
    assert again.waiting > 0 and not again.found


# --- a run pinned to its manifest --------------------------------------------------------------


def test_the_run_tag_holds_the_whole_manifest_digest():
    digest = "ab" * 32
    assert delivery_run_tags("cnam", "d1", digest)[MANIFEST_DIGEST_TAG] == digest


def test_a_manifest_changed_after_the_sensor_saw_it_is_refused_and_the_published_copy_stays(
    tmp_path, keys, hub, sftp_settings, inbox
):
    prepared = _delivery(tmp_path, keys, "pinned", rows=7)
    upload(sftp_settings, prepared, inbox)
    ingest(sftp_settings, inbox, hub, "cnam", "pinned")
    published = hub.storage.published_summary("cnam", "pinned")["manifest_sha256"]

    # The provider replaces the manifest (re-signed) after the sensor announced the first one.
    edit_manifest(prepared, lambda d: d.update(created_at="2030-01-01T00:00:00Z"), keys=keys)
    upload(sftp_settings, prepared, inbox, names=[MANIFEST_NAME, SIGNATURE_NAME])
    with sftp_session(sftp_settings) as session, pytest.raises(DeliveryRejected) as caught:
        source = SftpDeliverySource(session, f"{inbox}/cnam/pinned")
        ingest_delivery(source, "cnam", "pinned", hub, expected_manifest_sha256=published)
    assert caught.value.reason == Reason.MANIFEST_CHANGED
    record = json.loads(hub.storage.quarantine_file("cnam", "pinned").read_text())
    assert record["reason"] == "manifest_changed" and record["published_manifest_sha256"] == published
    assert len(raw_rows(hub.storage, "IR_BEN_R")) == 7, "the verified, published copy stays"


# --- full matches ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["name", "atc_prefixes"])
def test_a_final_newline_does_not_pass_an_identifier_pattern(field):
    values = {"name": "abc\n", "atc_prefixes": ("A10\n",)}
    spec = IndicatorSpec(
        name="abc", unit="persons", breakdown=("year",), year_from=2023, year_to=2024, atc_prefixes=("A10",)
    )
    with pytest.raises(OpenDataRefused):
        dataclasses.replace(spec, **{field: values[field]}).validate()


def test_a_run_refuses_another_manifest_than_its_tag_names(
    tmp_path,
    keys,
    sftp_settings,
    inbox,
    hub_env,
    instance,
):
    from hdh_pipelines.definitions import defs

    upload(sftp_settings, _delivery(tmp_path, keys, "tagged"), inbox)
    job = defs.resolve_job_def("ingest_delivery_job")
    instance.add_dynamic_partitions("deliveries", ["cnam/tagged"])
    result = job.execute_in_process(
        instance=instance,
        partition_key="cnam/tagged",
        tags={MANIFEST_DIGEST_TAG: "0" * 64},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.event_specific_data.user_failure_data.metadata["reason"].value == "manifest_changed"
