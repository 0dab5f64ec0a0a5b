"""Why an open-science request is refused: a machine-readable reason and a sentence a person understands."""

from __future__ import annotations


class OpenDataRefused(Exception):
    """A request (indicator, open dataset, challenge export) cannot be served; nothing of it is published.

    ``reason`` is a stable code (``unknown_algorithm``, ``invalid_breakdown``…),
    ``message`` says what is wrong and what to do, ``field`` names the request
    field at fault when there is one.
    """

    def __init__(self, reason: str, message: str, *, field: str | None = None):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, str]:
        details = {"reason": self.reason, "message": self.message}
        if self.field is not None:
            details["field"] = self.field
        return details
