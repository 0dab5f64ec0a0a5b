"""The hub's own configuration: private storage, key ring, provider and dataset registries."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from hdh_pipelines.delivery.keys import HubKeyRing, ProviderRegistry
from hdh_pipelines.ingestion import HubContext, QualityGate
from hdh_pipelines.quality import DuckDBSettings
from hdh_pipelines.raw_store import LoadSettings
from hdh_pipelines.registry import DatasetRegistry
from hdh_pipelines.storage import HubStorage


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
