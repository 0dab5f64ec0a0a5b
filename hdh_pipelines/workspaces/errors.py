"""Why a workspace is not built: a machine-readable reason and a sentence a person understands."""

from __future__ import annotations


class WorkspaceRefused(Exception):
    """A project, its file or its inputs do not allow a workspace; nothing of it is written.

    ``reason`` is a stable code (``invalid_project``, ``project_expired``…),
    ``message`` says what is wrong and what to do, ``field`` names the project
    file's field at fault when there is one.
    """

    def __init__(self, reason: str, message: str, *, project_id: str | None = None, field: str | None = None):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.project_id = project_id
        self.field = field

    def as_dict(self) -> dict[str, str]:
        details = {"reason": self.reason, "message": self.message}
        if self.project_id is not None:
            details["project"] = self.project_id
        if self.field is not None:
            details["field"] = self.field
        return details
