"""The dbt project as dbt itself describes it: the one reader of dbt metadata outside dbt.

Everything other stages know of the models (schema and relation, descriptions,
column names and types, ``meta``, the join links their ``relationships`` tests
declare, the raw tables they read) comes from dbt's ``manifest.json``, never
from the models' SQL or YAML: dbt has already resolved ``ref``, ``source``,
folder configuration, aliases and Jinja. The manifest is the one ``dbt parse``
writes (``dagster dev``, ``scripts/setup.sh`` or a deployment prepares it;
a checkout that never parsed is prepared on first use).

Under ``dagster dev`` every process that loads the code location parses the
project again while others (runs, other code servers, scripts) read its
manifest. dbt writes ``manifest.json`` in place, and dagster-dbt's own preparer
keeps writers apart, not readers: a reader could load half a manifest. Here a
parse writes into a folder of its own and each artefact is then renamed over
the old one, so a reader opens the old file or the new one, whole.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster_dbt import DbtCliResource, DbtProject
from dagster_dbt.dbt_project import using_dagster_dev

from hdh_pipelines.core.paths import DBT_PROJECT_DIR
from hdh_pipelines.core.private_files import held_lock

# DBT_TARGET_PATH is dbt's own setting for where its artefacts go (target/ in the project by default), and
# dagster-dbt's for where each command's folder goes: a process tree given a folder of its own (a test's
# `dagster dev`) parses into it and leaves the project's manifest, which every other process reads, alone.
dbt_project = DbtProject(
    project_dir=DBT_PROJECT_DIR,
    profiles_dir=DBT_PROJECT_DIR,
    target_path=os.environ.get("DBT_TARGET_PATH", "target"),
)


class DbtManifestError(ValueError):
    """The manifest cannot be read; ``reason`` is machine-readable."""

    reason = "dbt_manifest_unreadable"


# dbt's name for the parsed project it reuses when nothing it depends on has changed.
PARTIAL_PARSE_FILE = "partial_parse.msgpack"
# What a parse leaves that other processes read: dagster-dbt copies partial_parse.msgpack into each dbt
# command's own target folder. Renamed last, the manifest is never older than the partial-parse state.
PARSE_ARTEFACTS = (PARTIAL_PARSE_FILE, "manifest.json")
SCRATCH_PREFIX = ".parse-"


def prepared_manifest_path(project: DbtProject = dbt_project) -> Path:
    """The project's manifest, parsed first under ``dagster dev`` (to show edited models) or when missing."""
    if using_dagster_dev() or not project.manifest_path.exists():
        parse_project(project)
    return project.manifest_path


@functools.cache
def code_location_manifest_path() -> Path:
    """The repository project's manifest, prepared once per process: under ``dagster dev`` each process
    (a code server's load, a run's worker) parses once, not at each reader of the manifest."""
    return prepared_manifest_path()


def _modified_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def parse_project(project: DbtProject) -> None:
    """``dbt parse`` the project, replacing its manifest whole (never rewriting it in place).

    One parse at a time: a process that waited for another's parse takes its manifest
    rather than parsing the same files again.
    """
    target = project.project_dir / project.target_path
    target.mkdir(parents=True, exist_ok=True)
    seen = _modified_ns(project.manifest_path)
    with held_lock(target / ".parse.lock"):
        current = _modified_ns(project.manifest_path)
        if current is not None and current != seen:
            return
        # Under the lock no other parse runs: a scratch folder left is a killed parse's (dagster dev stopped).
        for leftover in target.glob(f"{SCRATCH_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=target))
        try:
            DbtCliResource(project_dir=project).cli(["parse", "--quiet"], target_path=scratch).wait()
            for name in PARSE_ARTEFACTS:
                os.replace(scratch / name, target / name)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class DbtColumn:
    name: str
    data_type: str
    description: str


@dataclass(frozen=True)
class DbtJoinLink:
    """Columns of one model that reference columns of another (a relationships test)."""

    columns: tuple[str, ...]
    target: str
    target_columns: tuple[str, ...]


@dataclass(frozen=True)
class DbtModel:
    name: str
    schema: str
    relation: str
    description: str
    columns: tuple[DbtColumn, ...]
    meta: Mapping[str, Any]
    parents: tuple[str, ...]
    raw_sources: tuple[str, ...]
    links: tuple[DbtJoinLink, ...]


@dataclass(frozen=True)
class DbtManifest:
    models: Mapping[str, DbtModel]

    def in_schemas(self, *schemas: str) -> list[DbtModel]:
        return [m for name, m in sorted(self.models.items()) if m.schema in schemas]

    def column_descriptions(self) -> dict[str, dict[str, str]]:
        """Model -> column -> description."""
        return {name: {c.name: c.description for c in m.columns} for name, m in self.models.items()}


def _one_line(text: str | None) -> str:
    return " ".join(str(text or "").split())


def _links(nodes: Mapping[str, Mapping[str, Any]]) -> dict[str, list[DbtJoinLink]]:
    """Model unique id -> the links its ``relationships`` and ``composite_relationship`` tests declare."""
    links: dict[str, list[DbtJoinLink]] = {}
    for node in nodes.values():
        test = node.get("test_metadata") or {}
        attached = node.get("attached_node")
        if node["resource_type"] != "test" or not attached:
            continue
        targets = [n for n in node["depends_on"]["nodes"] if n != attached and n.startswith("model.")]
        target = targets[0] if targets else attached
        kwargs = test.get("kwargs", {})
        if test.get("name") == "relationships":
            columns, target_columns = (kwargs["column_name"],), (kwargs["field"],)
        elif test.get("name") == "composite_relationship":
            columns = target_columns = tuple(kwargs["columns"])
        else:
            continue
        links.setdefault(attached, []).append(DbtJoinLink(columns, nodes[target]["name"], target_columns))
    return links


def parse_manifest(document: Mapping[str, Any]) -> DbtManifest:
    nodes, sources = document["nodes"], document["sources"]
    links = _links(nodes)
    models = {}
    for unique_id, node in nodes.items():
        if node["resource_type"] != "model":
            continue
        parents = node["depends_on"]["nodes"]
        models[node["name"]] = DbtModel(
            name=node["name"],
            schema=node["schema"],
            relation=f"{node['schema']}.{node['alias']}",
            description=_one_line(node.get("description")),
            columns=tuple(
                DbtColumn(c["name"], c.get("data_type") or "", _one_line(c.get("description")))
                for c in node["columns"].values()
            ),
            meta=node["config"].get("meta", {}),
            parents=tuple(nodes[p]["name"] for p in parents if p.startswith("model.")),
            raw_sources=tuple(
                sources[p]["name"] for p in parents if p in sources and sources[p]["source_name"] == "raw"
            ),
            links=tuple(links.get(unique_id, [])),
        )
    return DbtManifest(models)


def read_manifest(path: Path | None = None) -> DbtManifest:
    """The models of the manifest at ``path`` (the repository project's, prepared if need be, by default)."""
    path = path or code_location_manifest_path()
    try:
        return parse_manifest(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError) as error:
        raise DbtManifestError(
            f"{path}: not a readable dbt manifest ({type(error).__name__}); run `dbt parse` in dbt_project/."
        ) from error
