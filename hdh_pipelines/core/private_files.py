"""Owner-only storage: folders 0700 and files 0600 from the first byte, for plaintext and everything derived.

Every stage that writes personal data (ingestion, workspaces, linkage,
open science, rights) uses these, so the modes and the way they are applied
are defined once.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private_dir(path: Path) -> Path:
    """Create ``path`` and missing parents owner-only from the start (and tighten an existing ``path``).

    ``Path.mkdir(parents=True)`` would create the parents with the umask's mode
    (often 0755): each missing folder is created here with 0700 instead.
    """
    missing = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        folder.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``path`` atomically (temporary name, then rename), owner-only from the start."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def make_tree_owner_only(folder: Path) -> None:
    """Owner-only for a tree written by another library (DuckDB, Spark follow the process umask).

    Call it on a staging folder no one else can reach yet, before it is renamed into place.
    """
    for directory, _, files in os.walk(folder):
        os.chmod(directory, PRIVATE_DIR_MODE)
        for name in files:
            os.chmod(os.path.join(directory, name), PRIVATE_FILE_MODE)


@contextmanager
def held_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on ``path``, an owner-only file created if missing.

    A holder in another process makes this wait until it is done; ``on_wait`` is
    called once first, to say so. The lock goes with the process, so a crashed
    holder never leaves it taken. ``flock`` locks one open file, not the
    process: never nest two of these on the same path.
    """
    # Read-only: flock needs no write access, so a reader with a read-only view of the folder can wait too.
    descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
