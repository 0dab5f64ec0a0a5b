"""The workspace audit trail is tamper-evident and names an identity the hub can vouch for (issue 13 §5)."""

from __future__ import annotations

import os
import pwd
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq
import pytest

from hdh_pipelines.workspaces.audit import (
    AuditRecord,
    AuditTrailTampered,
    append_audit_record,
    process_requester,
    read_audit_trail,
)


def _trail(root, count: int) -> list:
    return [
        append_audit_record(
            root,
            AuditRecord(
                project="p-one", run_id=f"run-{i}", requester=process_requester(), outcome="materialised"
            ),
        )
        for i in range(count)
    ]


def _rewrite(path, change) -> None:
    """What someone with write access to the trail could do to one record file."""
    table = pq.read_table(path)
    row = change(table.to_pylist()[0])
    os.chmod(path, 0o600)
    pq.write_table(table.from_pylist([row], schema=table.schema), path)


def test_an_intact_trail_reads_back_in_order(tmp_path):
    _trail(tmp_path, 3)
    assert [r["run_id"] for r in read_audit_trail(tmp_path)] == ["run-0", "run-1", "run-2"]


def test_concurrent_appends_keep_one_chain(tmp_path):
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: _trail(tmp_path, 1), range(8)))
    assert [r["sequence"] for r in read_audit_trail(tmp_path)] == list(range(1, 9))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda files: _rewrite(files[1], lambda row: {**row, "requester": "os:someone-else"}),
        lambda files: _rewrite(
            files[1], lambda row: {**row, "outcome": "refused", "record_sha256": "0" * 64}
        ),
        lambda files: os.unlink(files[1]),
        lambda files: (
            os.rename(files[2], files[1].with_name("000000000002-x.parquet")) or os.unlink(files[1])
        ),
    ],
    ids=["edited", "edited-and-rehashed-badly", "removed", "replaced-by-a-later-one"],
)
def test_a_tampered_record_is_reported_with_its_position(tmp_path, tamper):
    files = _trail(tmp_path, 4)
    tamper(files)
    with pytest.raises(AuditTrailTampered) as caught:
        read_audit_trail(tmp_path)
    assert caught.value.position == 2


def test_an_edit_rehashed_in_place_breaks_the_next_link(tmp_path):
    """Recomputing the edited record's own hash is not enough: the next record names the old one."""
    from hdh_pipelines.workspaces.audit import _record_sha256

    files = _trail(tmp_path, 3)

    def forge(row):
        row = {**row, "requester": "os:someone-else"}
        return {**row, "record_sha256": _record_sha256(row)}

    _rewrite(files[1], forge)
    with pytest.raises(AuditTrailTampered) as caught:
        read_audit_trail(tmp_path)
    assert caught.value.position == 3


def test_the_requester_is_the_process_account_and_a_tag_only_a_claim():
    account = pwd.getpwuid(os.geteuid()).pw_name
    assert process_requester() == f"os:{account}"
    assert process_requester("k.benali") == f"os:{account}; claimed:k.benali"
    assert process_requester("x\nos:root") == f"os:{account}; claimed:unreadable"
