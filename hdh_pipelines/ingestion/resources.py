"""Ingestion's resources: the hub's own configuration (private storage, key ring, provider and dataset
registries) and the providers' SFTP inbox."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from hdh_deliver.keys import HubKeyRing, ProviderRegistry
from hdh_deliver.transfer import SftpSession, SftpSettings, sftp_session
from hdh_pipelines.ingestion.pipeline import HubContext, QualityGate
from hdh_pipelines.ingestion.raw_store import LoadSettings
from hdh_pipelines.ingestion.storage import HubStorage
from hdh_pipelines.quality import DuckDBSettings
from hdh_pipelines.registry import DatasetRegistry


class HubResource(dg.ConfigurableResource):
    """Where the hub keeps plaintext and raw tables, and which keys and providers it trusts."""

    private_root: str = Field(description="Owner-only folder for plaintext, raw tables and quarantine.")
    keyring_file: str = Field(description="YAML list of the hub's RSA private key files (see docs).")
    provider_registry_file: str = Field(description="YAML map of provider ids to signing public keys.")
    dataset_registry_dir: str | None = Field(
        default=None, description="Folder of Table Schema JSON files; the packaged registry if unset."
    )
    load_memory_limit: str = Field(default="1GB", description="DuckDB memory cap for one raw load.")
    load_threads: int = Field(default=2, description="DuckDB threads for one raw load.")
    quality_gate: bool = Field(
        default=True,
        description="Validate each delivered table with its Great Expectations suite before publication; "
        "turn off only to load data whose suite is being written.",
    )
    validation_memory_limit: str = Field(default="1GB", description="DuckDB memory cap for one validation.")

    def storage(self) -> HubStorage:
        return HubStorage(Path(self.private_root))

    def registry(self) -> DatasetRegistry:
        return DatasetRegistry.load(Path(self.dataset_registry_dir) if self.dataset_registry_dir else None)

    def context(self) -> HubContext:
        """Load keys and registries once, for one run."""
        return HubContext(
            keyring=HubKeyRing.from_file(Path(self.keyring_file)),
            providers=ProviderRegistry.from_file(Path(self.provider_registry_file)),
            registry=self.registry(),
            storage=self.storage(),
            load_settings=LoadSettings(memory_limit=self.load_memory_limit, threads=self.load_threads),
            quality_gate=QualityGate(
                DuckDBSettings(memory_limit=self.validation_memory_limit, threads=self.load_threads)
            )
            if self.quality_gate
            else None,
        )


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
