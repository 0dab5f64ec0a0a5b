"""The project registry: one YAML file per authorised project, validated whole or refused whole.

A file ``projects/<id>.yaml`` states what a project was authorised to
receive (see ``projects/`` for two examples and docs/workspaces.md for every
field). ``load_project`` returns a frozen :class:`Project` or raises
:class:`WorkspaceRefused` naming the field and the reason; nothing of an
invalid file is ever used.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import duckdb
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hdh_pipelines.workspaces.datasets import EXTRACTABLE_DATASETS, HUB_IDENTIFIER_COLUMNS
from hdh_pipelines.workspaces.errors import WorkspaceRefused

# Project ids become partition keys, run tags and folder names: keep them to what all three accept.
PROJECT_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{2,47}$"
ProjectId = Annotated[str, StringConstraints(pattern=PROJECT_ID_PATTERN)]
SqlName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

# Marts a population predicate may read; anything else (files, other schemas, table functions) is refused.
PREDICATE_TABLES = frozenset(
    {"persons", "claims", "drug_dispensations", "hospital_stays", "hospital_stay_diagnoses"}
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Authorisation(_Strict):
    number: Text
    date: date


class Authorisations(_Strict):
    cesrees: Authorisation = Field(description="Opinion of the CESREES (ethics and scientific committee).")
    cnil: Authorisation = Field(description="Decision of the CNIL authorising the processing.")


class Population(_Strict):
    """Who is in the extract: persons found by cohort-targeting algorithms, or matching a SQL predicate."""

    algorithms: list[SqlName] | None = Field(
        default=None,
        min_length=1,
        description="Tables algorithms.<name>: persons found in a year of the period.",
    )
    predicate: Text | None = Field(
        default=None, description="SQL condition on marts.persons (alias persons)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Population:
        if (self.algorithms is None) == (self.predicate is None):
            raise ValueError("give either 'algorithms' or 'predicate', not both and not neither")
        if self.predicate is not None:
            check_population_predicate(self.predicate)
        return self


class StudyPeriod(_Strict):
    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> StudyPeriod:
        if self.end < self.start:
            raise ValueError(f"the period ends ({self.end}) before it starts ({self.start})")
        return self


class Project(_Strict):
    id: ProjectId
    title: Text
    lead: Text
    authorisations: Authorisations
    legal_basis: Text
    purpose: Text
    # Before datasets: the datasets validator reads it.
    linkage_approved: bool
    datasets: dict[str, list[SqlName]] = Field(min_length=1)
    population: Population
    study_period: StudyPeriod
    expires_on: date
    output_formats: list[Literal["parquet", "duckdb"]] = Field(min_length=1)

    @field_validator("datasets")
    @classmethod
    def _approvable(cls, datasets: dict[str, list[str]], info: ValidationInfo) -> dict[str, list[str]]:
        for name, columns in datasets.items():
            dataset = EXTRACTABLE_DATASETS.get(name)
            if dataset is None:
                raise ValueError(
                    f"dataset {name!r} is not extractable (known: {', '.join(EXTRACTABLE_DATASETS)})"
                )
            if dataset.requires_linkage and info.data.get("linkage_approved") is not True:
                raise ValueError(f"dataset {name!r} holds linked cohort data and linkage is not approved")
            if not columns:
                raise ValueError(f"dataset {name!r} lists no column")
            if len(set(columns)) != len(columns):
                raise ValueError(f"dataset {name!r} lists a column twice")
            identifiers = sorted(set(columns) & (HUB_IDENTIFIER_COLUMNS | set(dataset.pseudonym_columns)))
            if identifiers:
                raise ValueError(
                    f"dataset {name!r} lists identifier column(s) {identifiers}: identifiers are never "
                    "extracted, every output carries the project's own "
                    f"{', '.join(dataset.pseudonym_columns)}"
                )
        return datasets

    @field_validator("output_formats")
    @classmethod
    def _formats(cls, formats: list[str]) -> list[str]:
        if len(set(formats)) != len(formats):
            raise ValueError("a format is listed twice")
        if "parquet" not in formats:
            # The next materialisation carries unchanged months over from the Parquet files.
            raise ValueError(
                "'parquet' is required: it is the workspace's canonical store ('duckdb' adds a file)"
            )
        return formats

    def approval_references(self) -> dict[str, str]:
        return {
            "cesrees_opinion": f"{self.authorisations.cesrees.number} ({self.authorisations.cesrees.date})",
            "cnil_decision": f"{self.authorisations.cnil.number} ({self.authorisations.cnil.date})",
            "legal_basis": self.legal_basis,
        }

    def content_digest(self) -> str:
        """Digest of everything that decides a workspace's content (not the wording of title or purpose)."""
        decisive = self.model_dump(
            mode="json",
            include={"datasets", "population", "study_period", "linkage_approved", "output_formats"},
        )
        return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()


def check_population_predicate(predicate: str) -> None:
    """Refuse a predicate that is more than a condition on the marts (a UNION, a file, another schema)."""
    parsed = json.loads(
        duckdb.execute(
            "select json_serialize_sql($sql)", {"sql": f"select ben_idt_ano from persons where ({predicate})"}
        ).fetchone()[0]
    )
    if parsed.get("error"):
        raise ValueError(f"the predicate is not valid SQL: {parsed.get('error_message')}")
    statements = parsed["statements"]
    if len(statements) != 1 or statements[0]["node"]["type"] != "SELECT_NODE":
        raise ValueError("the predicate must be one condition, not a statement or a set operation")
    for kind, schema, table in _table_references(statements[0]):
        if kind != "BASE_TABLE" or schema not in ("", "marts") or table not in PREDICATE_TABLES:
            raise ValueError(
                f"the predicate may read only the marts {sorted(PREDICATE_TABLES)}, not "
                f"{'a table function' if kind != 'BASE_TABLE' else f'{schema}.{table}'.lstrip('.')}"
            )


def _table_references(node: object) -> list[tuple[str, str | None, str | None]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") in ("BASE_TABLE", "TABLE_FUNCTION", "SUBQUERY_TABLE_FUNCTION"):
            found.append((node["type"], node.get("schema_name"), node.get("table_name")))
        for value in node.values():
            found += _table_references(value)
    elif isinstance(node, list):
        for value in node:
            found += _table_references(value)
    return found


def _field_path(location: tuple) -> str:
    return ".".join(str(part) for part in location) or "(file)"


def load_project(path: Path) -> Project:
    """Read and validate one project file; any problem raises ``WorkspaceRefused('invalid_project')``."""
    project_id = path.stem
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise WorkspaceRefused(
            "invalid_project", f"{path.name} cannot be read as YAML: {error}", project_id=project_id
        ) from None
    if not isinstance(document, dict):
        raise WorkspaceRefused(
            "invalid_project", f"{path.name} is not a YAML mapping.", project_id=project_id
        )
    try:
        project = Project.model_validate(document)
    except ValidationError as error:
        problems = [f"field '{_field_path(e['loc'])}': {e['msg']}" for e in error.errors()]
        raise WorkspaceRefused(
            "invalid_project",
            f"{path.name} is invalid and was not applied: " + "; ".join(problems) + ".",
            project_id=project_id,
            field=_field_path(error.errors()[0]["loc"]),
        ) from None
    if project.id != project_id:
        raise WorkspaceRefused(
            "invalid_project",
            f"{path.name} declares id {project.id!r}: the file must be named after its project "
            f"({project.id}.yaml).",
            project_id=project_id,
            field="id",
        )
    return project


def check_not_expired(project: Project, today: date) -> None:
    if today > project.expires_on:
        raise WorkspaceRefused(
            "project_expired",
            f"Project {project.id} expired on {project.expires_on}: its authorisation no longer allows an "
            "extract. Renew the approval and update expires_on in its project file.",
            project_id=project.id,
            field="expires_on",
        )


_PROJECT_FILE = re.compile(r"[^.].*\.ya?ml")  # fullmatch: "$" would accept a final newline


@dataclass(frozen=True)
class RegistryScan:
    projects: dict[str, Project] = field(default_factory=dict)
    refused: list[WorkspaceRefused] = field(default_factory=list)


def scan_registry(folder: Path) -> RegistryScan:
    """Every project file of ``folder``: the valid projects by id, and each refused file with its reason."""
    scan = RegistryScan()
    for path in sorted(folder.iterdir()):
        if not (path.is_file() and _PROJECT_FILE.fullmatch(path.name)):
            continue
        try:
            project = load_project(path)
        except WorkspaceRefused as refusal:
            scan.refused.append(refusal)
            continue
        scan.projects[project.id] = project
    return scan


def project_file(folder: Path, project_id: str) -> Path:
    """The registry file of ``project_id``; an id that is not a valid project id finds nothing."""
    if re.fullmatch(PROJECT_ID_PATTERN, project_id):
        for suffix in (".yaml", ".yml"):
            candidate = folder / f"{project_id}{suffix}"
            if candidate.is_file():
                return candidate
    raise WorkspaceRefused(
        "unknown_project",
        f"No project file {project_id}.yaml in the project registry: the project was withdrawn or "
        "never approved.",
        project_id=project_id,
    )


@dataclass(frozen=True)
class PartitionChanges:
    """How the registry moves the project partitions: the file, not the partition, is the authority."""

    add: list[str]
    remove: list[str]


def partition_changes(scan: RegistryScan, known: set[str], today: date) -> PartitionChanges:
    """Add valid, unexpired projects; remove expired or withdrawn ones.

    A known project whose file became invalid keeps its partition (an invalid
    file changes nothing); its runs are refused until the file is fixed.
    """
    refused_ids = {refusal.project_id for refusal in scan.refused}
    live = {project_id for project_id, project in scan.projects.items() if today <= project.expires_on}
    add = sorted(live - known)
    remove = sorted(known - live - refused_ids)
    return PartitionChanges(add, remove)
