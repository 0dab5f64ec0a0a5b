"""An ingestion process killed mid-decryption leaves nothing visible, and a re-run succeeds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

from deliveries import build, columns_of, raw_rows, upload

from hdh_deliver.provider import SourceFile
from hdh_deliver.transfer import sftp_session
from hdh_pipelines.ingestion.pipeline import ingest_delivery
from hdh_pipelines.ingestion.receive import SftpDeliverySource

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from hdh_deliver.keys import HubKeyRing, ProviderRegistry
    from hdh_pipelines.ingestion.receive import SftpDeliverySource
    from hdh_deliver.transfer import SftpSettings, sftp_session
    from hdh_pipelines.ingestion.pipeline import HubContext, ingest_delivery
    from hdh_pipelines.registry import default_registry
    from hdh_pipelines.ingestion.storage import HubStorage

    host, port, user, key, known, folder, keyring, providers, root = sys.argv[1:]
    hub = HubContext(HubKeyRing.from_file(Path(keyring)), ProviderRegistry.from_file(Path(providers)),
                     default_registry(), HubStorage(Path(root)))
    with sftp_session(SftpSettings(host, int(port), user, Path(key), Path(known))) as session:
        ingest_delivery(SftpDeliverySource(session, folder), "cnam", "big", hub)
    """
)


def test_killed_mid_decryption(tmp_path, keys, hub, sftp_settings, inbox):
    columns = columns_of("ER_PRS_F")
    line = (";".join(["123456789"] * len(columns)) + "\n").encode()
    rows = (160 << 20) // len(line)
    path = tmp_path / "ER_PRS_F.csv"
    path.write_bytes((";".join(columns) + "\n").encode() + line * rows)
    upload(
        sftp_settings,
        build(
            tmp_path, keys, "cnam", "big", [SourceFile(path, "ER_PRS_F", gzip=False)], segment_size=1 << 20
        ),
        inbox,
    )

    s = sftp_settings
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            s.host,
            str(s.port),
            s.user,
            str(s.private_key_file),
            str(s.known_hosts_file),
            f"{inbox}/cnam/big",
            str(keys.keyring_file),
            str(keys.providers_file),
            str(hub.storage.root),
        ],
    )
    staging = hub.storage.staging_dir("cnam", "big")
    # A backstop only: the wait ends as soon as a partial file is there or the child exits. The child's
    # start (its imports) takes most of a minute on a loaded two-core machine.
    deadline = time.monotonic() + 600
    partial = []
    while time.monotonic() < deadline and child.poll() is None:
        partial = (
            [p for p in staging.rglob("*.tmp") if p.stat().st_size > (8 << 20)] if staging.exists() else []
        )
        if partial:
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=0.02)  # paces the checks; returns at once if the child exits
    assert partial, f"the child finished (exit status {child.returncode}) or never started decrypting"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    # Nothing visible: no raw table, no received plaintext; the partial file stays in staging.
    assert not hub.storage.raw_dir("cnam", "big").exists()
    assert not hub.storage.received_dir("cnam", "big").exists()
    assert raw_rows(hub.storage, "ER_PRS_F") == []
    assert not hub.storage.quarantine_file("cnam", "big").exists()

    with sftp_session(sftp_settings) as session:
        report = ingest_delivery(SftpDeliverySource(session, f"{inbox}/cnam/big"), "cnam", "big", hub)
    assert report.rows_by_dataset() == {"ER_PRS_F": rows}
    assert list(staging.iterdir()) == [], "leftovers of the killed run are cleaned by the re-run"
