"""Folders Spark reads and writes, wherever they are: a local (or mounted) folder, an S3 prefix or an ADLS
Gen2 prefix, each named as Spark names it, as DuckDB names it, and opened through ``pyarrow.fs``.

Spark reaches object stores through Hadoop's connectors (``s3a://``, ``abfss://``); DuckDB (httpfs) and
pyarrow name S3 ``s3://`` and read ``abfss://`` as it is. Listing, sizes and last writes, small files and
removals go through ``pyarrow.fs.FileSystem.from_uri``, so a local folder, S3 and ADLS take the same code;
object stores' credentials come from the environment (``AWS_*``, ``AZURE_*``), and nothing is contacted
until a file is touched. Used by the linkage root and by the Spark warehouse (its tables' files).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Self
from urllib.parse import urlparse

import pyarrow.fs as pafs

from hdh_pipelines.core.private_files import make_private_dir, write_private_file

# Object stores Spark reads and writes through Hadoop's connectors.
OBJECT_STORE_SCHEMES = ("s3a", "abfss")
# Spark's scheme → DuckDB's and pyarrow's, where they differ (both read abfss:// as Spark names it).
LIBRARY_SCHEMES = {"s3a": "s3"}
_ABFSS_HOST_SUFFIX = ".dfs.core.windows.net"


class UnsupportedLocation(ValueError):
    """A location Spark is not set up for here, with why."""


def library_uri(uri: str) -> str:
    """A Spark URI as DuckDB and pyarrow name it."""
    scheme, separator, rest = uri.partition("://")
    return f"{LIBRARY_SCHEMES.get(scheme, scheme)}{separator}{rest}"


@dataclass(frozen=True)
class StorageLocation:
    """A folder: ``uri`` is Spark's name of it (``file:///…``, ``s3a://bucket/prefix``,
    ``abfss://container@account.dfs.core.windows.net/prefix``), without a trailing slash; ``local`` is the
    folder when it is one. Nothing is contacted when a location is parsed."""

    uri: str
    local: Path | None = None

    @classmethod
    def parse(cls, location: str) -> Self:
        """A plain path or ``file://`` URI (resolved), or an object-store prefix; ``UnsupportedLocation``
        for any other scheme (``s3://`` included: Spark's connector is ``s3a://``), a bare bucket, or an
        ``abfss://`` URI that does not name ``container@account.dfs.core.windows.net``."""
        parsed = urlparse(location)
        if parsed.scheme in ("", "file"):
            folder = Path(parsed.path if parsed.scheme else location).resolve()
            return cls(folder.as_uri(), folder)
        if parsed.scheme not in OBJECT_STORE_SCHEMES:
            hint = " (Spark's S3 connector is s3a://)" if parsed.scheme in ("s3", "s3n") else ""
            raise UnsupportedLocation(f"has a scheme Spark is not set up for here: {parsed.scheme}://{hint}")
        prefix = parsed.path.strip("/")
        if not parsed.netloc or not prefix or parsed.query or parsed.fragment:
            raise UnsupportedLocation("needs a bucket or container and a prefix inside it, and nothing else")
        if parsed.scheme == "abfss":
            container, _, host = parsed.netloc.partition("@")
            if not container or not host.endswith(_ABFSS_HOST_SUFFIX) or host == _ABFSS_HOST_SUFFIX:
                raise UnsupportedLocation("does not name container@account.dfs.core.windows.net")
        return cls(f"{parsed.scheme}://{parsed.netloc}/{prefix}")

    def spark_uri(self, *parts: str) -> str:
        """What Spark reads and writes: the folder's URI and the parts below it."""
        return "/".join((self.uri, *parts))

    def duckdb_uri(self, *parts: str) -> str:
        """What DuckDB reads and writes: a local path, ``s3://`` (httpfs) or the same ``abfss://`` (azure)."""
        if self.local is not None:
            return str(self.local.joinpath(*parts))
        return library_uri(self.spark_uri(*parts))

    @cached_property
    def _filesystem_root(self) -> tuple[pafs.FileSystem, str]:
        # Once per location: on S3, from_uri asks the bucket's region.
        return pafs.FileSystem.from_uri(str(self.local) if self.local is not None else library_uri(self.uri))

    def filesystem(self, *parts: str) -> tuple[pafs.FileSystem, str]:
        """The pyarrow file system and the path of ``parts`` in it."""
        filesystem, root = self._filesystem_root
        return filesystem, "/".join((root, *parts))

    def exists(self, *parts: str) -> bool:
        filesystem, path = self.filesystem(*parts)
        return filesystem.get_file_info(path).type != pafs.FileType.NotFound

    def write(self, data: bytes, *parts: str) -> None:
        """A small file: owner-only and renamed into place locally; one PUT (atomic) on object stores."""
        if self.local is not None:
            write_private_file(make_private_dir(self.local.joinpath(*parts[:-1])) / parts[-1], data)
            return
        filesystem, path = self.filesystem(*parts)
        with filesystem.open_output_stream(path) as stream:
            stream.write(data)

    def read(self, *parts: str) -> bytes | None:
        """A small file's bytes, None when it is absent."""
        if not self.exists(*parts):
            return None
        filesystem, path = self.filesystem(*parts)
        with filesystem.open_input_stream(path) as stream:
            return stream.read()

    def remove(self, *parts: str) -> None:
        """Remove a folder and what it holds (nothing when it is absent)."""
        filesystem, path = self.filesystem(*parts)
        if filesystem.get_file_info(path).type == pafs.FileType.Directory:
            filesystem.delete_dir(path)

    def listing(self, *parts: str, recursive: bool = False) -> list[pafs.FileInfo]:
        """What a folder holds (everything below it when ``recursive``); nothing when it is absent."""
        filesystem, path = self.filesystem(*parts)
        if filesystem.get_file_info(path).type != pafs.FileType.Directory:
            return []
        return filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
