"""The private sshd behaves like the providers' real SFTP endpoint.

These tests pin what the ingestion tests and benchmarks rely on: strict host key
checking works with the generated known_hosts, only authorised keys get in,
uploads can be renamed into place, and stopping leaves no process behind.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hdh_devtools.sftp_server import SftpServer, sshd_path, start_sftp_server

pytestmark = pytest.mark.skipif(sshd_path() is None, reason="openssh-server is not installed")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SftpServer]:
    with start_sftp_server(tmp_path / "sftp") as running:
        yield running


def _connect(
    server: SftpServer, *, known_hosts: Path | None = None, pkey: paramiko.PKey | None = None
) -> paramiko.SSHClient:
    """Connect the way the ingestion code must: known host keys only, one explicit key."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or server.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            server.host,
            port=server.port,
            username=server.user,
            pkey=pkey,
            key_filename=None if pkey else str(server.client_key),
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
        )
    except BaseException:
        client.close()
        raise
    return client


def _new_key() -> tuple[paramiko.PKey, str]:
    """A fresh ed25519 key pair: (paramiko private key, OpenSSH public key line)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem)), f"{public} stranger"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_upload_list_rename_download(server: SftpServer, tmp_path: Path) -> None:
    payload = b"patient_id,visit_date\n1,2024-01-02\n"
    local = tmp_path / "visits.csv"
    local.write_bytes(payload)

    with _connect(server) as client, client.open_sftp() as sftp:
        staging = f"{server.inbox}/visits.csv.part"
        final = f"{server.inbox}/visits.csv"
        sftp.put(str(local), staging)
        assert sftp.listdir(str(server.inbox)) == ["visits.csv.part"]
        sftp.posix_rename(staging, final)
        assert sftp.listdir(str(server.inbox)) == ["visits.csv"]
        downloaded = tmp_path / "downloaded.csv"
        sftp.get(final, str(downloaded))

    assert downloaded.read_bytes() == payload
    assert (server.inbox / "visits.csv").read_bytes() == payload


def test_unknown_host_key_is_refused(server: SftpServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _connect(server, known_hosts=empty)


def test_only_authorised_keys_log_in(server: SftpServer) -> None:
    stranger, stranger_public = _new_key()
    with pytest.raises(paramiko.AuthenticationException):
        _connect(server, pkey=stranger)

    server.add_authorized_key(stranger_public)
    with _connect(server, pkey=stranger) as client, client.open_sftp() as sftp:
        assert sftp.listdir(str(server.inbox)) == []


def test_extra_authorized_keys_at_start(tmp_path: Path) -> None:
    provider, provider_public = _new_key()
    with (
        start_sftp_server(tmp_path / "sftp", extra_authorized_keys=[provider_public]) as server,
        _connect(server, pkey=provider) as client,
        client.open_sftp() as sftp,
    ):
        assert sftp.listdir(str(server.inbox)) == []


def test_multi_line_key_is_rejected(server: SftpServer) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        server.add_authorized_key("ssh-ed25519 AAAA one\nssh-ed25519 BBBB two")


def test_shell_access_is_not_granted(server: SftpServer) -> None:
    """ForceCommand keeps the real OS account SFTP-only: exec requests run internal-sftp."""
    with _connect(server) as client:
        _stdin, stdout, _stderr = client.exec_command("echo pwned", timeout=10)
        assert b"pwned" not in stdout.read()


def test_restart_reuses_keys(tmp_path: Path) -> None:
    with start_sftp_server(tmp_path / "sftp") as first:
        host_key, client_key = first.host_public_key, first.client_key.read_bytes()
    with start_sftp_server(tmp_path / "sftp") as second:
        assert second.host_public_key == host_key
        assert second.client_key.read_bytes() == client_key
        _connect(second).close()


def test_stop_kills_sshd_and_is_idempotent(tmp_path: Path) -> None:
    server = start_sftp_server(tmp_path / "sftp")
    assert _pid_exists(server.pid)

    server.stop()
    assert not _pid_exists(server.pid)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port), timeout=2).close()
    server.stop()


def test_startup_failure_reports_sshd_log(tmp_path: Path) -> None:
    """An explicit port is not retried, and the error says why sshd died."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy_port = squatter.getsockname()[1]
        with pytest.raises(RuntimeError, match="Cannot bind any address"):
            start_sftp_server(tmp_path / "sftp", port=busy_port)


def test_openssh_sftp_client_fetches_a_file(server: SftpServer, tmp_path: Path) -> None:
    if shutil.which("sftp") is None:
        pytest.skip("the OpenSSH sftp client is not installed")
    (server.inbox / "report.csv").write_bytes(b"a,b\n1,2\n")
    target = tmp_path / "fetched.csv"
    batch = tmp_path / "batch"
    batch.write_text(f"get {server.inbox}/report.csv {target}\n")

    result = subprocess.run(
        server.sftp_command(batch), capture_output=True, text=True, timeout=30, check=False
    )

    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == b"a,b\n1,2\n"


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_script_mode_prints_details_and_stops_on_signal(tmp_path: Path, stop_signal: signal.Signals) -> None:
    root = tmp_path / "sftp"
    process = subprocess.Popen(
        [sys.executable, "-m", "hdh_devtools.sftp_server", str(root)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        details = json.loads(process.stdout.readline())
        assert details["inbox"] == str(root.resolve() / "inbox")
        with socket.create_connection((details["host"], details["port"]), timeout=5) as conn:
            assert conn.recv(64).startswith(b"SSH-2.0-")

        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
        assert not _pid_exists(details["pid"])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
