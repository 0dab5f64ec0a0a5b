"""Project workspaces: approved, minimised, per-project pseudonymised extracts and their audit trail.

A pure core: ``projects`` validates the registry,
``build.materialise_workspace`` extracts, documents, swaps in and audits one
workspace, ``audit`` keeps the append-only trail. The Dagster shell is
``assets``, ``resources`` and ``sensors`` (the project registry sensor).
"""

from hdh_pipelines.workspaces.audit import AuditRecord, append_audit_record, audit_glob, read_audit_trail
from hdh_pipelines.workspaces.build import (
    WorkspaceResult,
    WorkspaceSettings,
    materialise_workspace,
    months_between,
)
from hdh_pipelines.workspaces.datasets import EXTRACTABLE_DATASETS, HUB_IDENTIFIER_COLUMNS
from hdh_pipelines.workspaces.errors import WorkspaceRefused
from hdh_pipelines.workspaces.projects import (
    PartitionChanges,
    Project,
    RegistryScan,
    check_not_expired,
    load_project,
    partition_changes,
    scan_registry,
)

__all__ = [
    "EXTRACTABLE_DATASETS",
    "HUB_IDENTIFIER_COLUMNS",
    "AuditRecord",
    "PartitionChanges",
    "Project",
    "RegistryScan",
    "WorkspaceRefused",
    "WorkspaceResult",
    "WorkspaceSettings",
    "append_audit_record",
    "audit_glob",
    "check_not_expired",
    "load_project",
    "materialise_workspace",
    "months_between",
    "partition_changes",
    "read_audit_trail",
    "scan_registry",
]
