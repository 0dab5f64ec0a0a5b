"""The rights stage's resource: the website form's intake folder and the keys of its forms."""

import dagster as dg
from pydantic import Field


class RightsResource(dg.ConfigurableResource):
    """Where the rights form drops requests, and which form keys the hub trusts."""

    intake_dir: str = Field(description="Folder where the website's form writes signed requests.")
    forms_registry_file: str = Field(
        description="Provider-style YAML of the forms' Ed25519 public keys (docs/rights.md)."
    )
