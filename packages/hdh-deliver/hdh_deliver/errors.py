"""Why a delivery is refused: a machine-readable reason and a sentence for people."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Machine-readable refusal reasons; the first twelve are the specification's own."""

    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_PROVIDER = "unknown_provider"
    UNKNOWN_KEY = "unknown_key"
    BAD_MANIFEST = "bad_manifest"
    MISSING_FILE = "missing_file"
    SIZE_MISMATCH = "size_mismatch"
    DIGEST_MISMATCH = "digest_mismatch"
    AUTH_FAILED = "auth_failed"
    TRUNCATED = "truncated"
    ROW_COUNT_MISMATCH = "row_count_mismatch"
    UNKNOWN_DATASET = "unknown_dataset"
    BAD_NAME = "bad_name"
    # Extensions the specification allows with its trailing "…".
    BAD_HEADER = "bad_header"
    TRAILING_DATA = "trailing_data"
    MISSING_COLUMN = "missing_column"
    UNKNOWN_COLUMN = "unknown_column"
    BAD_DATA = "bad_data"
    # The provider is known but the registry does not let it deliver this dataset.
    PROVIDER_NOT_AUTHORISED = "provider_not_authorised"
    # The manifest on the server is not the one the sensor announced the run for.
    MANIFEST_CHANGED = "manifest_changed"


class DeliveryRejected(Exception):
    """A delivery that breaks the contract: quarantined whole, never retried as is.

    ``message`` is written for a person (provider or data engineer) and never
    carries key material or data values.
    """

    def __init__(self, reason: Reason, message: str, *, file: str | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.file = file

    def as_dict(self) -> dict[str, str | None]:
        return {"reason": str(self.reason), "message": self.message, "file": self.file}
