"""A private PostgreSQL server on loopback, for the production-style Dagster instance.

The production instance profile (``deploy/dagster-postgres.yaml``) keeps runs,
event logs and schedules in PostgreSQL. Where no server is configured
(``HDH_PG_HOST`` unset), ``scripts/instance.sh`` and the tests start this one:
the machine's own PostgreSQL binaries, a cluster initialised under a folder of
ours, TCP on a loopback port only (no Unix socket, so nothing collides with a
system cluster), password authentication (SCRAM) for a superuser whose random
password lives in an owner-only file.

PostgreSQL refuses to run as root: started by root, the server runs as the OS
user ``postgres`` (created by Debian's package), which then owns the folder.

Usable as a script, which ``scripts/instance.sh`` uses::

    python -m hdh_devtools.postgres_server start ROOT --env-file FILE [--database NAME]
    python -m hdh_devtools.postgres_server stop ROOT

``start`` starts the server in the background (or finds it running), creates the
database and writes the ``HDH_PG_*`` settings to ``FILE`` (owner-only); ``stop``
stops it by the PID it recorded in its data folder.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psycopg2
from psycopg2 import sql

from hdh_devtools.readiness import ReadinessSocket, wait_for_exit
from hdh_devtools.sftp_server import LOOPBACK, _free_port

__all__ = [
    "PG_SETTINGS",
    "PostgresServer",
    "ensure_database",
    "postgres_bin_dir",
    "start_postgres_server",
    "stop_postgres_server",
]

# The environment variables the production instance profile reads its connection from (``env:``).
PG_HOST, PG_PORT, PG_USER, PG_PASSWORD, PG_DB = (
    "HDH_PG_HOST",
    "HDH_PG_PORT",
    "HDH_PG_USER",
    "HDH_PG_PASSWORD",
    "HDH_PG_DB",
)
PG_SETTINGS = (PG_HOST, PG_PORT, PG_USER, PG_PASSWORD, PG_DB)
SUPERUSER = "hdh"
DEFAULT_DATABASE = "dagster"
# The OS account Debian's postgresql package creates; a root caller runs the server as it.
SERVER_ACCOUNT = "postgres"
DEBIAN_BINARIES = Path("/usr/lib/postgresql")
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
PORT_ATTEMPTS = 5
BIND_FAILURE = "Address already in use"
LOG_TAIL_LINES = 30


def postgres_bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``postgres``: on ``PATH``, else Debian's newest version.

    Debian installs them under ``/usr/lib/postgresql/<major>/bin``, which is not on ``PATH``.
    """
    found = shutil.which("postgres")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = sorted(
        (p for p in DEBIAN_BINARIES.glob("*/bin") if (p / "postgres").is_file() and p.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
    )
    return versions[-1] if versions else None


@dataclass
class PostgresServer:
    """A running private PostgreSQL and what a client needs to reach it."""

    root: Path
    host: str
    port: int
    user: str
    password_file: Path
    database: str
    pid: int
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def settings(self, database: str | None = None) -> dict[str, str]:
        """The ``HDH_PG_*`` environment of the instance profile for ``database`` (default: the server's)."""
        return {
            PG_HOST: self.host,
            PG_PORT: str(self.port),
            PG_USER: self.user,
            PG_PASSWORD: self.password_file.read_text(encoding="utf-8").strip(),
            PG_DB: database or self.database,
        }

    def create_database(self, name: str) -> None:
        """Create ``name`` unless it exists (``CREATE DATABASE`` has no ``IF NOT EXISTS``)."""
        ensure_database(self.settings(), name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions are ended, the cluster stays consistent); safe to repeat."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGINT)
                try:
                    self._process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            return
        _stop_pid(self.pid)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_postgres_server(root: Path, *, database: str = DEFAULT_DATABASE) -> PostgresServer:
    """Start (or find running) the cluster under ``root`` on a free loopback port; create ``database``.

    The cluster is initialised once and kept: a restart finds the instance's history again.
    """
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError(
            "PostgreSQL server binaries not found: install Debian's postgresql package "
            "(scripts/setup.sh does)"
        )
    account = _server_account()
    root = root.resolve()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    _hand_over(root, account)
    root.chmod(0o700)
    _check_reachable(root, account)
    password_file = _ensure_password(root / "password", account)
    data = root / "data"
    if not (data / "PG_VERSION").is_file():
        _initdb(bin_dir, data, password_file, account)

    running = _running_pid_and_port(data)
    if running is not None:
        pid, port = running
        server = PostgresServer(root, LOOPBACK, port, SUPERUSER, password_file, database, pid)
    else:
        server = _launch_on_free_port(bin_dir, root, data, password_file, database, account)
    try:
        server.create_database(database)
    except BaseException:
        if running is None:
            server.stop()
        raise
    return server


def stop_postgres_server(root: Path) -> bool:
    """Stop the cluster under ``root`` by the PID in its ``postmaster.pid``; ``False`` if none was running."""
    running = _running_pid_and_port(root.resolve() / "data")
    if running is None:
        return False
    _stop_pid(running[0])
    return True


def ensure_database(settings: Mapping[str, str], name: str) -> None:
    """Create database ``name`` on the server ``settings`` point to, unless it exists."""
    connection = _connect(settings, "postgres")
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute("select 1 from pg_database where datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    finally:
        connection.close()


def _connect(settings: Mapping[str, str], database: str):
    return psycopg2.connect(
        host=settings[PG_HOST],
        port=int(settings[PG_PORT]),
        user=settings[PG_USER],
        password=settings[PG_PASSWORD],
        dbname=database,
        connect_timeout=5,
    )


def _server_account() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        raise RuntimeError(
            f"PostgreSQL refuses to run as root and there is no '{SERVER_ACCOUNT}' account to run it as: "
            "install Debian's postgresql package, or run as an ordinary user"
        ) from None


def _as_account(account: pwd.struct_passwd) -> dict:
    """Popen arguments that run a child as ``account`` (only a root caller needs to switch)."""
    if os.geteuid() != 0:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _hand_over(path: Path, account: pwd.struct_passwd) -> None:
    if os.geteuid() == 0:
        os.chown(path, account.pw_uid, account.pw_gid)


def _check_reachable(root: Path, account: pwd.struct_passwd) -> None:
    """A root caller's folder may sit below one the server account cannot enter: say so plainly."""
    if os.geteuid() != 0:
        return
    probe = subprocess.run(["test", "-w", str(root)], check=False, cwd="/", **_as_account(account))
    if probe.returncode != 0:
        raise RuntimeError(
            f"the OS user '{account.pw_name}' that runs PostgreSQL cannot reach {root}: "
            "choose a folder below directories it may enter"
        )


def _ensure_password(path: Path, account: pwd.struct_passwd) -> Path:
    """A random superuser password, owner-only from the first byte, made once per cluster."""
    if not path.is_file():
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        _hand_over(staging, account)
        staging.rename(path)
    return path


def _initdb(bin_dir: Path, data: Path, password_file: Path, account: pwd.struct_passwd) -> None:
    """Initialise the cluster in a staging folder renamed into place: a failed initdb leaves no cluster."""
    staging = data.with_name(f".{data.name}.initdb")
    if staging.exists():
        shutil.rmtree(staging)
    result = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "--pgdata", str(staging),
            "--username", SUPERUSER,
            "--pwfile", str(password_file),
            "--auth", "scram-sha-256",
            "--encoding", "UTF8",
            "--no-locale",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        cwd=data.parent,
        **_as_account(account),
    )  # fmt: skip
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {(result.stderr or result.stdout).strip()[-2000:]}")
    staging.rename(data)


def _running_pid_and_port(data: Path) -> tuple[int, int] | None:
    """The PID and port in ``postmaster.pid`` if that server is alive (a stale file after a crash is not)."""
    lock = data / "postmaster.pid"
    try:
        lines = lock.read_text(encoding="utf-8").splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    if not _serves(pid, data):
        return None
    return pid, port


def _serves(pid: int, data: Path) -> bool:
    """Whether ``pid`` is a postgres serving ``data``: after a crash, the PID in a stale ``postmaster.pid``
    may belong to another process by now, which a stop must not signal. The postmaster keeps the command
    line it was started with (``_launch``: ``postgres -D <data>``)."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False  # exited since
    except OSError:
        return True  # no /proc here (or not readable): the PID check alone, as pg_ctl does
    return Path(os.fsdecode(arguments[0])).name == "postgres" and os.fsencode(str(data)) in arguments


def _launch_on_free_port(
    bin_dir: Path,
    root: Path,
    data: Path,
    password_file: Path,
    database: str,
    account: pwd.struct_passwd,
) -> PostgresServer:
    """Only a free port we chose can be lost to a race before postgres binds it, so try a few."""
    attempt = 0
    while True:
        attempt += 1
        port = _free_port()
        with ReadinessSocket() as readiness:
            process = _launch(bin_dir, root, data, port, account, readiness.environment)
            server = PostgresServer(
                root, LOOPBACK, port, SUPERUSER, password_file, database, process.pid, process
            )
            if _wait_until_ready(server, readiness, retry_on_bind_failure=attempt < PORT_ATTEMPTS):
                return server


def _launch(
    bin_dir: Path,
    root: Path,
    data: Path,
    port: int,
    account: pwd.struct_passwd,
    readiness_environment: Mapping[str, str],
) -> subprocess.Popen[bytes]:
    """Run ``postgres`` itself (no ``pg_ctl`` in between), so its PID is the server's.

    Its own session keeps a Ctrl-C aimed at the caller's terminal from stopping it behind
    the caller's back; ``stop`` owns its lifetime.
    """
    log_file = root / "server.log"
    with os.fdopen(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        _hand_over(log_file, account)
        return subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D", str(data),
                "-p", str(port),
                "-c", f"listen_addresses={LOOPBACK}",
                "-c", "unix_socket_directories=",
                "-c", "logging_collector=off",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
            env={**os.environ, **readiness_environment},
            **_as_account(account),
        )  # fmt: skip


def _wait_until_ready(
    server: PostgresServer, readiness: ReadinessSocket, *, retry_on_bind_failure: bool
) -> bool:
    """``True`` once the server accepts our password; ``False`` if its port was taken (try another).

    PostgreSQL says when it accepts connections (``READY=1``, ``hdh_devtools.readiness``); a
    login with the cluster's own password then proves the answer comes from our server, not
    from another process that grabbed the port first.
    """
    assert server._process is not None
    log_start = server.log_file.stat().st_size
    try:
        ready = readiness.wait(server._process.pid, STARTUP_TIMEOUT_S)
    except TimeoutError:
        server.stop()
        message = f"postgres was not ready within {STARTUP_TIMEOUT_S:.0f} s"
        raise RuntimeError(_failure(message, server.log_file)) from None
    except BaseException:
        server.stop()
        raise
    if ready:
        try:
            _connect(server.settings(), "postgres").close()
        except psycopg2.OperationalError as error:
            server.stop()
            raise RuntimeError(
                _failure(f"postgres is ready but refuses our login: {error}", server.log_file)
            ) from None
        return True
    server._process.wait()
    if retry_on_bind_failure and BIND_FAILURE in _log_since(server.log_file, log_start):
        return False
    raise RuntimeError(_failure(f"postgres exited with status {server._process.returncode}", server.log_file))


def _stop_pid(pid: int) -> None:
    """SIGINT (fast shutdown) to a server we did not start in this process; wait until it is gone."""
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    if not wait_for_exit(pid, STOP_TIMEOUT_S):
        raise RuntimeError(f"postgres (pid {pid}) did not stop within {STOP_TIMEOUT_S:.0f} s")


def _log_since(log_file: Path, offset: int) -> str:
    with open(log_file, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode("utf-8", errors="replace")


def _failure(message: str, log_file: Path) -> str:
    lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
    tail = "\n".join(lines) if lines else "(empty)"
    return f"{message}; tail of {log_file}:\n{tail}"


def _write_env_file(path: Path, settings: Mapping[str, str]) -> None:
    """``NAME=value`` lines for ``set -a; . FILE``, owner-only from the first byte, replaced atomically."""
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        # The values are a loopback address, digits, names and a URL-safe token: nothing to quote.
        handle.write("".join(f"{name}={value}\n" for name, value in settings.items()))
    staging.rename(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hdh_devtools.postgres_server",
        description="Start or stop a private PostgreSQL on loopback for the Dagster instance.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start the server (or find it running) and create the database")
    start.add_argument("root", type=Path, help="folder of the cluster, its password and its log")
    start.add_argument("--env-file", type=Path, required=True, help="where to write the HDH_PG_* settings")
    start.add_argument("--database", default=DEFAULT_DATABASE, help="database to create (default: dagster)")
    stop = commands.add_parser("stop", help="stop the server by its PID")
    stop.add_argument("root", type=Path)
    args = parser.parse_args(argv)

    if args.command == "start":
        server = start_postgres_server(args.root, database=args.database)
        _write_env_file(args.env_file, server.settings())
        # The server outlives this process by design: it runs in its own session.
        print(f"PostgreSQL (pid {server.pid}) on {server.host}:{server.port}, database {server.database}")
        return 0
    print("PostgreSQL stopped" if stop_postgres_server(args.root) else "PostgreSQL was not running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
