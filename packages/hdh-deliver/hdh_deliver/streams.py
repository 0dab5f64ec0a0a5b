"""Small stream helpers: fill reusable buffers, and hash and count the bytes passing through."""

from __future__ import annotations

import hashlib
from os import PathLike
from typing import BinaryIO, Protocol


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def read_into(source: Readable, buffer: bytearray) -> int:
    """Fill ``buffer`` from ``source`` and return the count, short only at end of file.

    SFTP and pipe reads may come back short, so one call is not enough. The
    source's ``readinto`` is used when it has one: a local file then goes from
    the page cache straight into the caller's reused buffer, one copy and no
    allocation, which matters at gigabytes per second.
    """
    view = memoryview(buffer)
    readinto = getattr(source, "readinto", None)
    filled = 0
    while filled < len(view):
        if readinto is not None:
            count = readinto(view[filled:]) or 0
        else:
            chunk = source.read(len(view) - filled)
            count = len(chunk)
            view[filled : filled + count] = chunk
        if not count:
            break
        filled += count
    return filled


class HashingWriter:
    """Forward writes to ``target`` while computing their SHA-256 and size."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._hash = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes | memoryview) -> int:
        self._hash.update(data)
        self.bytes += len(data)
        return self._target.write(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def sha256_file(path: str | PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hash a file in fixed-size chunks, into one reused buffer, so memory does not grow with its size."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()
