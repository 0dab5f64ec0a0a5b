"""A private, real OpenSSH ``sshd`` serving SFTP on loopback.

Data providers deliver files to the hub over SFTP.  The test suite and the demo
need an SFTP endpoint that behaves like the production one (host key checking,
public-key-only authentication, atomic renames) without touching the machine's
own ``sshd``.  An in-process paramiko server would be easier to start but would
only test paramiko against itself; running the genuine OpenSSH daemon with its
own configuration, keys and port keeps the client code honest and lets the
OpenSSH ``sftp`` command-line client be used for benchmarks.

This is a test/demo fixture, not a security boundary: there is no chroot
(``ChrootDirectory`` requires a root-owned path, which a temporary directory is
not), so an authenticated client can see the whole file system with the
permissions of the OS user it logs in as.  Everything else is locked down:
loopback only, a single allowed user, keys only, SFTP only.

Usable as a script, which the demo uses to run the server in the background::

    python -m hdh_devtools.sftp_server ROOT [--port N]

prints one JSON line describing the server, then stays in the foreground until
SIGTERM or SIGINT and stops ``sshd`` on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from hdh_devtools.readiness import ReadinessSocket

__all__ = ["SftpServer", "sshd_path", "start_sftp_server"]

LOOPBACK = "127.0.0.1"
# Privilege-separation directory: sshd started as root refuses to run without it.
PRIVSEP_DIR = Path("/run/sshd")
STARTUP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
# Only free ports we chose ourselves can be lost to a race between closing the probe
# socket and sshd binding, so only those are retried.
PORT_ATTEMPTS = 5
LOG_TAIL_LINES = 30
AUTHORIZED_KEYS = "authorized_keys"
BIND_FAILURE = "Cannot bind any address"


def sshd_path() -> Path | None:
    """Locate the OpenSSH daemon; ``None`` lets callers skip rather than fail.

    ``/usr/sbin`` is checked explicitly because it is often missing from ``PATH``
    for non-root users.  The path is absolute because sshd refuses to re-exec itself
    from a relative one.
    """
    default = Path("/usr/sbin/sshd")
    if default.is_file() and os.access(default, os.X_OK):
        return default
    found = shutil.which("sshd")
    return Path(found).resolve() if found else None


@dataclass
class SftpServer:
    """A running sshd and everything a client needs to reach it securely."""

    root: Path
    inbox: Path
    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_public_key: str
    pid: int
    _process: subprocess.Popen[bytes] = field(repr=False, compare=False)

    @property
    def authorized_keys(self) -> Path:
        return self.root / AUTHORIZED_KEYS

    @property
    def log_file(self) -> Path:
        return self.root / "sshd.log"

    def add_authorized_key(self, public_key_line: str) -> None:
        """Authorise another public key, e.g. a second provider's, without restarting.

        sshd rereads ``authorized_keys`` on every login, so the key works at once.
        Multi-line input is refused: a smuggled newline would add a key the caller
        never meant to authorise.
        """
        line = _single_key_line(public_key_line)
        with self.authorized_keys.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def sftp_command(self, batch_file: Path) -> list[str]:
        """The OpenSSH ``sftp`` invocation that runs ``batch_file`` against this server.

        Centralised so benchmarks use the same strict settings as the tests: only our
        key, only our known_hosts, no user or system ssh_config to interfere.
        """
        return [
            "sftp",
            "-F", "/dev/null",
            "-i", str(self.client_key),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-P", str(self.port),
            "-b", str(batch_file),
            f"{self.user}@{self.host}",
        ]  # fmt: skip

    def wait(self) -> int:
        """Block until sshd exits; lets the script mode notice a crashed daemon."""
        return self._process.wait()

    def stop(self) -> None:
        """Terminate sshd (SIGTERM, then SIGKILL) and reap it; safe to call repeatedly.

        Reaping matters: an unreaped sshd lingers as a zombie whose PID still exists.
        Sessions already open live in their own processes (sshd calls ``setsid`` for
        each connection) and end when their clients disconnect.
        """
        if self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> SftpServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_sftp_server(
    root: Path, *, port: int | None = None, extra_authorized_keys: Sequence[str] = ()
) -> SftpServer:
    """Start sshd serving SFTP on loopback, with all state kept under ``root``.

    Keys already under ``root`` are reused, so a restarted demo server keeps its host
    identity and providers keep their credentials.  ``authorized_keys`` is rewritten
    on every start to exactly the client key plus ``extra_authorized_keys``, so keys
    added to a previous instance do not silently stay authorised.
    """
    sshd = sshd_path()
    if sshd is None:
        raise RuntimeError("sshd not found: install the openssh-server package to run the SFTP server")
    root = root.resolve()
    if '"' in str(root) or "\n" in str(root):
        # Paths are double-quoted in sshd_config, which has no escape for these.
        raise ValueError(f"unsupported character in server root path: {root!r}")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    root.chmod(0o700)
    inbox = root / "inbox"
    inbox.mkdir(mode=0o700, exist_ok=True)
    _ensure_privsep_dir()

    host_key = _ensure_keypair(root / "ssh_host_ed25519_key", comment="hdh-sftp-host")
    client_key = _ensure_keypair(root / "client_ed25519_key", comment="hdh-sftp-client")
    host_public_key = _public_key_without_comment(host_key.with_suffix(".pub"))
    authorized = [client_key.with_suffix(".pub").read_text(encoding="utf-8").strip()]
    authorized += [_single_key_line(line) for line in extra_authorized_keys]
    (root / AUTHORIZED_KEYS).write_text("\n".join(authorized) + "\n", encoding="utf-8")

    user = pwd.getpwuid(os.geteuid()).pw_name
    attempts = 1 if port is not None else PORT_ATTEMPTS
    config = root / "sshd_config"
    process: subprocess.Popen[bytes] | None = None
    attempt = 0
    while process is None:
        attempt += 1
        chosen = port if port is not None else _free_port()
        config.write_text(_sshd_config(root, chosen, user, host_key), encoding="utf-8")
        _validate_config(sshd, config)
        process = _launch(sshd, config, root / "sshd.log", chosen, retry_on_bind_failure=attempt < attempts)

    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"{_known_hosts_name(chosen)} {host_public_key}\n", encoding="utf-8")
    return SftpServer(
        root=root,
        inbox=inbox,
        host=LOOPBACK,
        port=chosen,
        user=user,
        client_key=client_key,
        known_hosts=known_hosts,
        host_public_key=host_public_key,
        pid=process.pid,
        _process=process,
    )


def _single_key_line(public_key_line: str) -> str:
    line = public_key_line.strip()
    if not line or "\n" in line or "\r" in line:
        raise ValueError("expected exactly one OpenSSH public key line")
    return line


def _ensure_privsep_dir() -> None:
    """Create sshd's privilege-separation directory, which only a root sshd needs."""
    if PRIVSEP_DIR.is_dir() or os.geteuid() != 0:
        return
    PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)


def _ensure_keypair(private_key: Path, *, comment: str) -> Path:
    """Generate an unencrypted ed25519 key pair unless one is already there.

    ssh-keygen's output (fingerprint, randomart) is captured, not echoed; it never
    contains the private key but has no place in test or demo output either.
    """
    if private_key.is_file() and private_key.with_suffix(".pub").is_file():
        return private_key
    private_key.unlink(missing_ok=True)
    private_key.with_suffix(".pub").unlink(missing_ok=True)
    result = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private_key)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ssh-keygen failed for {private_key}: {result.stderr.strip()}")
    return private_key


def _public_key_without_comment(public_key_file: Path) -> str:
    key_type, key_data, *_comment = public_key_file.read_text(encoding="utf-8").split()
    return f"{key_type} {key_data}"


def _known_hosts_name(port: int) -> str:
    """known_hosts spells non-default ports as ``[host]:port``; both paramiko and OpenSSH match on it."""
    return LOOPBACK if port == 22 else f"[{LOOPBACK}]:{port}"


def _free_port() -> int:
    """Ask the kernel for a free loopback port; sshd binds it moments later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _sshd_config(root: Path, port: int, user: str, host_key: Path) -> str:
    """A self-contained configuration: nothing is inherited from /etc/ssh.

    ``StrictModes no`` because sshd refuses key files below a world-writable directory
    such as /tmp, where pytest puts its temporary directories.  ``ForceCommand
    internal-sftp`` makes the account SFTP-only even though it is the real OS user.
    ``%`` is doubled in AuthorizedKeysFile because sshd expands ``%`` tokens there.
    """
    authorized_keys = str(root / AUTHORIZED_KEYS).replace("%", "%%")
    return "\n".join(
        [
            f"ListenAddress {LOOPBACK}",
            f"Port {port}",
            f'HostKey "{host_key}"',
            f'PidFile "{root / "sshd.pid"}"',
            f'AuthorizedKeysFile "{authorized_keys}"',
            f"AllowUsers {user}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "Subsystem sftp internal-sftp",
            "ForceCommand internal-sftp",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "AllowStreamLocalForwarding no",
            "X11Forwarding no",
            "PermitTunnel no",
            "PermitTTY no",
            "PrintMotd no",
            "LogLevel VERBOSE",
            "",
        ]
    )


def _validate_config(sshd: Path, config: Path) -> None:
    """Run ``sshd -t`` so a bad configuration fails with sshd's own message, not a timeout."""
    result = subprocess.run(
        [str(sshd), "-t", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"sshd rejected {config}: {(result.stderr or result.stdout).strip()}")


def _launch(
    sshd: Path, config: Path, log_file: Path, port: int, *, retry_on_bind_failure: bool
) -> subprocess.Popen[bytes] | None:
    """Start sshd and wait until it is ready; ``None`` means the port was taken, try another.

    sshd says when it is ready (``READY=1`` on ``NOTIFY_SOCKET``, once its port is
    bound; ``hdh_devtools.readiness``), and an ``SSH-2.0`` banner on the port then
    confirms it. sshd gets its own session so a Ctrl-C aimed at the caller's
    terminal does not kill it behind the caller's back; stop() owns its lifetime.
    """
    log_file.write_bytes(b"")
    with ReadinessSocket() as readiness:
        process = subprocess.Popen(
            [str(sshd), "-D", "-e", "-f", str(config), "-E", str(log_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **readiness.environment},
        )
        try:
            ready = readiness.wait(process.pid, STARTUP_TIMEOUT_S)
        except TimeoutError:
            _terminate(process)
            message = f"sshd was not ready on port {port} within {STARTUP_TIMEOUT_S:.0f} s"
            raise RuntimeError(_failure(message, log_file)) from None
        except BaseException:
            _terminate(process)
            raise
    if ready and _answers_ssh(port):
        return process
    if ready:
        _terminate(process)
        raise RuntimeError(_failure(f"sshd said it was ready but port {port} gives no SSH banner", log_file))
    process.wait()
    if retry_on_bind_failure and BIND_FAILURE in log_file.read_text(encoding="utf-8", errors="replace"):
        return None
    raise RuntimeError(_failure(f"sshd exited with status {process.returncode} on port {port}", log_file))


def _answers_ssh(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as conn:
            return conn.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def _terminate(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _failure(message: str, log_file: Path) -> str:
    lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
    tail = "\n".join(lines) if lines else "(empty)"
    return f"{message}; tail of {log_file}:\n{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run a server in the foreground so the demo can start it as a background process."""
    parser = argparse.ArgumentParser(
        prog="python -m hdh_devtools.sftp_server",
        description="Serve SFTP from a private sshd on loopback until SIGTERM/SIGINT.",
    )
    parser.add_argument("root", type=Path, help="directory for config, keys, logs and the inbox")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default: a free one)")
    args = parser.parse_args(argv)

    # Both signals become SystemExit so the `with` block below stops sshd on the way out.
    # SIGINT is set explicitly because a shell starting us with `&` (as the demo may)
    # leaves it ignored, and Python then never raises KeyboardInterrupt.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_on_signal)
    with start_sftp_server(args.root, port=args.port) as server:
        print(
            json.dumps(
                {
                    "host": server.host,
                    "port": server.port,
                    "user": server.user,
                    "client_key": str(server.client_key),
                    "known_hosts": str(server.known_hosts),
                    "inbox": str(server.inbox),
                    "pid": server.pid,
                }
            ),
            flush=True,
        )
        status = server.wait()
        print(_failure(f"sshd exited unexpectedly with status {status}", server.log_file), file=sys.stderr)
        return 1


def _exit_on_signal(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
