"""The workspaces' resource: where workspaces are written, what they are built from, where keys come from."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from hdh_pipelines.normalisation.manifest import read_manifest
from hdh_pipelines.normalisation.resources import WarehouseResource
from hdh_pipelines.workspaces import WorkspaceSettings


class WorkspaceResource(dg.ConfigurableResource):
    """Where workspaces are written and what they are built from; keys come from the environment."""

    root: str = Field(description="Owner-only folder holding one workspace folder per project.")
    warehouse: WarehouseResource = Field(description="The warehouse dbt built, on either engine (read-only).")
    projects_dir: str = Field(description="The project registry: one YAML file per project.")
    audit_root: str = Field(description="Owner-only folder of the append-only audit trail.")
    secrets_file: str | None = Field(
        default=None,
        description="Owner-only YAML 'projects: {<id>: <hex key>}'; HDH_WORKSPACE_KEY_<ID> variables win.",
    )
    dbt_manifest: str | None = Field(
        default=None,
        description="dbt manifest.json documenting the columns; the repository project's if unset.",
    )
    memory_limit: str = Field(default="1GB", description="DuckDB memory cap for one workspace build.")
    threads: int = Field(default=2, description="DuckDB threads for one workspace build.")

    def settings(self) -> WorkspaceSettings:
        return WorkspaceSettings(
            root=Path(self.root),
            warehouse=self.warehouse.warehouse(),
            projects_dir=Path(self.projects_dir),
            audit_root=Path(self.audit_root),
            secrets_file=Path(self.secrets_file) if self.secrets_file else None,
            column_descriptions=read_manifest(
                Path(self.dbt_manifest) if self.dbt_manifest else None
            ).column_descriptions(),
            memory_limit=self.memory_limit,
            threads=self.threads,
        )
