"""SFTP sessions for both sides, on paramiko, with strict host-key checking.

The server's host key must already be in the configured known_hosts file:
an unknown or changed key is refused, never added. Downloads are pipelined
(many read requests in flight) yet bounded in memory: paramiko reads replies
only as the consumer asks for data, and the SSH channel window caps what the
server may send ahead.
"""

from __future__ import annotations

import posixpath
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import paramiko

from hdh_pipelines.delivery.names import PART_SUFFIX

# GCM ciphers first: they are the fastest paramiko offers (about 20 % over CTR
# on loopback here); the rest keep interoperability with older servers.
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
WINDOW_BYTES = 16 * 1024 * 1024
MAX_PACKET_BYTES = 256 * 1024
READ_REQUESTS_IN_FLIGHT = 128


class SftpUnavailable(Exception):
    """The SFTP server cannot be used now: nothing about any delivery is decided."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class SftpSettings:
    host: str
    port: int
    user: str
    private_key_file: Path
    known_hosts_file: Path
    timeout_seconds: float = 30.0


def _known_host_names(host: str, port: int) -> list[str]:
    return [host] if port == 22 else [f"[{host}]:{port}"]


def _check_host_key(settings: SftpSettings, offered: paramiko.PKey) -> None:
    try:
        known = paramiko.HostKeys(str(settings.known_hosts_file))
    except OSError as error:
        raise SftpUnavailable(
            "known_hosts_unreadable", f"cannot read known_hosts file {settings.known_hosts_file}"
        ) from error
    for name in _known_host_names(settings.host, settings.port):
        entries = known.lookup(name)
        if not entries:
            continue
        expected = entries.get(offered.get_name())
        if expected is not None and expected == offered:
            return
        raise SftpUnavailable(
            "host_key_mismatch",
            f"the server at {name} offered a host key that differs from known_hosts: "
            "refusing to connect (possible man-in-the-middle or re-installed server)",
        )
    raise SftpUnavailable(
        "host_key_unknown",
        f"the server at {settings.host}:{settings.port} is not in known_hosts; "
        "add its verified key there (keys are never accepted automatically)",
    )


def _load_client_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(str(path))
    except (OSError, paramiko.SSHException) as error:
        raise SftpUnavailable("client_key_unreadable", f"cannot load SSH key {path}") from error


class SftpSession:
    """One authenticated SFTP connection, reused for every operation of a tick or run."""

    def __init__(self, transport: paramiko.Transport, client: paramiko.SFTPClient) -> None:
        self._transport = transport
        self.client = client

    def close(self) -> None:
        self.client.close()
        self._transport.close()

    def listdir(self, path: str) -> list[paramiko.SFTPAttributes]:
        return self.client.listdir_attr(path)

    def subdirectories(self, path: str) -> list[str]:
        return sorted(a.filename for a in self.listdir(path) if stat.S_ISDIR(a.st_mode or 0))

    def size(self, path: str) -> int | None:
        """The file's size, or None if it does not exist."""
        try:
            attributes = self.client.stat(path)
        except FileNotFoundError:
            return None
        return attributes.st_size

    def read_small(self, path: str, limit: int) -> bytes:
        """Read a whole small file (a manifest, a signature), refusing one over ``limit`` bytes."""
        with self.client.open(path, "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"{posixpath.basename(path)} is larger than {limit} bytes")
        return data

    @contextmanager
    def open_stream(self, path: str, size: int) -> Iterator[BinaryIO]:
        """Open ``path`` for one sequential pass with pipelined reads."""
        with self.client.open(path, "rb", bufsize=MAX_PACKET_BYTES) as handle:
            handle.prefetch(size, max_concurrent_requests=READ_REQUESTS_IN_FLIGHT)
            yield handle

    def upload(self, local: BinaryIO, remote_path: str) -> int:
        """Upload under ``<name>.part``, then rename: readers never see a partial file."""
        part = remote_path + PART_SUFFIX
        attributes = self.client.putfo(local, part, confirm=True)
        self.client.posix_rename(part, remote_path)
        return attributes.st_size or 0

    def makedirs(self, path: str) -> None:
        current = ""
        for piece in path.strip("/").split("/"):
            current = f"{current}/{piece}" if current or path.startswith("/") else piece
            try:
                self.client.stat(current)
            except FileNotFoundError:
                self.client.mkdir(current, mode=0o750)


@contextmanager
def sftp_session(settings: SftpSettings) -> Iterator[SftpSession]:
    """Connect, check the host key against known_hosts, authenticate with the key file."""
    client_key = _load_client_key(settings.private_key_file)
    try:
        sock = socket.create_connection((settings.host, settings.port), settings.timeout_seconds)
    except OSError as error:
        raise SftpUnavailable(
            "unreachable",
            f"cannot reach the SFTP server at {settings.host}:{settings.port} "
            f"({error.__class__.__name__}: {error.strerror or error})",
        ) from error
    transport = paramiko.Transport(
        sock, default_window_size=WINDOW_BYTES, default_max_packet_size=MAX_PACKET_BYTES
    )
    try:
        options = transport.get_security_options()
        options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in options.ciphers) + tuple(
            c for c in options.ciphers if c not in PREFERRED_CIPHERS
        )
        transport.banner_timeout = transport.auth_timeout = settings.timeout_seconds
        transport.start_client(timeout=settings.timeout_seconds)
        _check_host_key(settings, transport.get_remote_server_key())
        transport.auth_publickey(settings.user, client_key)
        client = paramiko.SFTPClient.from_transport(transport)
        client.get_channel().settimeout(settings.timeout_seconds)
    except SftpUnavailable:
        transport.close()
        raise
    except (paramiko.SSHException, OSError, EOFError) as error:
        transport.close()
        raise SftpUnavailable(
            "ssh_failed",
            f"SSH session with {settings.host}:{settings.port} failed "
            f"({error.__class__.__name__}: {error})",
        ) from error
    session = SftpSession(transport, client)
    try:
        yield session
    finally:
        session.close()
