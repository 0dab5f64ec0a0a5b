"""Waiting on a server we start, or stop, by its own signals: no polling, no sleep.

Debian's ``sshd`` and ``postgres`` are built with systemd's readiness protocol
(``sd_notify``): started with ``NOTIFY_SOCKET`` naming a datagram socket, they send
``READY=1`` there once they accept connections (sshd once its port is bound,
PostgreSQL once recovery is done). The starter listens on such a socket and on
the process's pidfd, which becomes readable when the process exits, so it wakes
the moment the server is ready or has failed. The timeout is only a backstop.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import time
from types import TracebackType

__all__ = ["ReadinessSocket", "wait_for_exit"]

NOTIFY_SOCKET = "NOTIFY_SOCKET"
READY = b"READY=1"


class ReadinessSocket:
    """A datagram socket in Linux's abstract namespace (no file, nothing to clean up, reachable by a
    server that runs as another OS account) on which one server announces that it is ready."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = f"hdh-ready-{os.getpid()}-{secrets.token_hex(8)}"
        self._socket.bind(f"\0{name}")
        self.environment = {NOTIFY_SOCKET: f"@{name}"}

    def wait(self, pid: int, timeout_seconds: float) -> bool:
        """``True`` once the server sent ``READY=1``; ``False`` if process ``pid`` exited first.

        Raises ``TimeoutError`` when neither happened within ``timeout_seconds``.
        """
        exited = os.pidfd_open(pid)
        try:
            deadline = time.monotonic() + timeout_seconds
            while (remaining := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([self._socket, exited], [], [], remaining)
                if self._socket in readable:
                    # One datagram may carry several newline-separated assignments (STATUS=…, READY=1).
                    if READY in self._socket.recv(4096).split(b"\n"):
                        return True
                elif exited in readable:
                    return False
            raise TimeoutError(f"process {pid}: neither ready nor exited within {timeout_seconds:.0f} s")
        finally:
            os.close(exited)

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> ReadinessSocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def wait_for_exit(pid: int, timeout_seconds: float) -> bool:
    """Block until process ``pid`` (a child or not) has exited: ``True``; ``False`` at the timeout."""
    try:
        exited = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([exited], [], [], timeout_seconds)
        return bool(readable)
    finally:
        os.close(exited)
