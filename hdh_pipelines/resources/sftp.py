"""The hub's SFTP inbox as a Dagster resource."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from hdh_pipelines.delivery.transfer import SftpSession, SftpSettings, sftp_session


class SftpResource(dg.ConfigurableResource):
    """Connection to the providers' SFTP server. The host key must be in ``known_hosts_file``."""

    host: str = Field(description="SFTP server host name or address.")
    port: int = Field(default=22, description="SFTP server port.")
    user: str = Field(description="Account the hub logs in as (read-only on the inbox).")
    private_key_file: str = Field(description="Path to the hub's SSH private key (owner-only file).")
    known_hosts_file: str = Field(
        description="known_hosts file holding the server's host key; unknown or changed keys are refused."
    )
    inbox_root: str = Field(description="Absolute path of the inbox on the server.")
    timeout_seconds: float = Field(default=30.0, description="Connect, banner, auth and I/O timeout.")

    def settings(self) -> SftpSettings:
        return SftpSettings(
            host=self.host,
            port=self.port,
            user=self.user,
            private_key_file=Path(self.private_key_file),
            known_hosts_file=Path(self.known_hosts_file),
            timeout_seconds=self.timeout_seconds,
        )

    @contextmanager
    def session(self) -> Iterator[SftpSession]:
        """One connection, to be reused for the whole tick or run."""
        with sftp_session(self.settings()) as session:
            yield session

    def delivery_folder(self, provider: str, delivery_id: str) -> str:
        return f"{self.inbox_root.rstrip('/')}/{provider}/{delivery_id}"
