"""Scanning a large inbox on a real SFTP server: identity, bounded work, fair resumption."""

from __future__ import annotations

from pathlib import Path

from deliveries import populate

from hdh_deliver.transfer import sftp_session
from hdh_pipelines.ingestion.inbox import ScanBudget, scan_inbox
from hdh_pipelines.ingestion.partitions import delivery_partition_key, parse_delivery_partition_key


def test_thousands_of_deliveries_are_covered_in_bounded_ticks(sftp_settings, inbox):
    root = Path(inbox)
    wanted = set(populate(root, "cnam", 1500) + populate(root, "aphp", 300))
    populate(root, "late", 40, signed=False)
    (root / "Bad Name").mkdir()
    (root / "cnam" / "...").mkdir(exist_ok=True)
    known: set[str] = set(list(wanted)[:100])  # some were requested before
    budget = ScanBudget(max_new=200, max_probes=450, max_seconds=20)
    cursor, ticks = None, 0
    with sftp_session(sftp_settings) as session:
        while True:
            ticks += 1
            scan = scan_inbox(
                session, inbox, known, key_of=delivery_partition_key, resume_after=cursor, budget=budget
            )
            found = {delivery_partition_key(f.provider, f.delivery_id) for f in scan.found}
            assert len(scan.found) <= budget.max_new
            assert not found & known, "a known delivery was found again"
            known |= found
            cursor = scan.resume_after
            if not scan.found and not scan.exhausted:
                break
            assert ticks < 40
    assert wanted <= known
    assert scan.waiting == 40 and scan.ignored_names == 2


def test_found_deliveries_carry_the_manifest_digest(sftp_settings, inbox):
    import hashlib

    populate(Path(inbox), "cnam", 1)
    with sftp_session(sftp_settings) as session:
        scan = scan_inbox(session, inbox, set(), key_of=delivery_partition_key)
    assert scan.found[0].manifest_sha256 == hashlib.sha256(b"{}").hexdigest()


def test_partition_keys_round_trip_dagster_forbidden_dots():
    for provider, delivery_id in [("cnam", "2026-11-27.001"), ("cnam", "a...b"), ("x_y-z", "A" * 64)]:
        key = delivery_partition_key(provider, delivery_id)
        assert "..." not in key and "," not in key
        assert parse_delivery_partition_key(key) == (provider, delivery_id)
