"""The catalogue's resource: where the public catalogue is published and what it is validated against."""

import dagster as dg
from pydantic import Field


class CatalogueResource(dg.ConfigurableResource):
    """Where the public catalogue is published, and the HealthDCAT-AP shapes it is validated against."""

    output_dir: str = Field(description="Folder of the public catalogue (metadata only, no row-level data).")
    validator_dir: str | None = Field(
        default=None, description="HealthDCAT-AP SHACL validator folder; $HDH_HEALTHDCAT_VALIDATOR if unset."
    )
    open_data_dir: str | None = Field(
        default=None,
        description="Public open-data folder (OpenScienceResource.public_root, $HDH_OPEN_DATA_DIR) whose "
        "datasets get a public record; unset: none.",
    )
