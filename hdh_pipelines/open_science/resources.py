"""The open-science resource: where indicators, open data and challenge exports are written."""

import dagster as dg
from pydantic import Field


class OpenScienceResource(dg.ConfigurableResource):
    """Where open-science outputs go; the challenge key comes from the environment (EnvVar)."""

    indicator_root: str = Field(description="Folder of indicator outputs, one sub-folder per indicator.")
    request_log: str = Field(description="Append-only JSON-lines log of indicator requests (owner-only).")
    public_root: str = Field(description="Public folder of the open datasets.")
    challenge_root: str = Field(description="Owner-only folder of data-challenge exports.")
    challenge_key: str | None = Field(default=None, description="Hex HMAC key of challenge pseudonyms.")
