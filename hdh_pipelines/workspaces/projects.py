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


# The CNIL's reference methodologies ("méthodologies de référence"): a commitment of conformity replaces
# an individual authorisation for the processings they cover.
REFERENCE_METHODOLOGIES = tuple(f"MR-00{number}" for number in range(1, 9))
RegulatoryRoute = Literal["reference_methodology", "cnil_authorisation", "other_legal_basis"]
# A role address, never a person's name: the DPO is published as a function and a mailbox.
RoleAddress = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")]


class DataProtectionOfficer(_Strict):
    role: Text = "Délégué à la protection des données"
    contact: RoleAddress


class Retention(_Strict):
    until: date = Field(description="Date by which the data user destroys the extract and its copies.")
    justification: Text


class OtherLegalBasis(_Strict):
    description: Text = Field(description="The legal text allowing the processing without a CNIL decision.")
    reference: Text
    date: date


# What each route requires, with the sentence the data user's checklist shows while it is missing.
ROUTE_REQUIREMENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "reference_methodology": (
        ("reference_methodology", "indiquer la méthodologie de référence suivie (MR-001 à MR-008)"),
        (
            "commitment",
            "joindre le récépissé de l'engagement de conformité à la méthodologie de référence "
            "(numéro et date)",
        ),
    ),
    "cnil_authorisation": (
        ("cesrees_opinion", "obtenir l'avis du CESREES (numéro et date)"),
        ("cnil_authorisation", "obtenir l'autorisation de la CNIL après l'avis du CESREES (numéro et date)"),
    ),
    "other_legal_basis": (
        ("other_basis", "décrire la base légale qui dispense d'autorisation (texte, référence, date)"),
    ),
}


class Regulatory(_Strict):
    """The project's regulatory file: its route to the data, its references, DPO and retention.

    The route says which references are required (``missing``); a route's
    reference that is absent is not a malformed file but an unfinished one:
    the file is accepted (its documents and checklist can be generated) and
    no workspace is built until it is complete (``check_regulatory_file``).
    """

    controller: Text = Field(description="The data controller, an organisation (never a natural person).")
    route: RegulatoryRoute
    legal_basis: Text = Field(description="GDPR bases of the processing (art. 6 and 9).")
    reference_methodology: Literal[REFERENCE_METHODOLOGIES] | None = None
    commitment: Authorisation | None = Field(
        default=None, description="Receipt of the commitment of conformity to the reference methodology."
    )
    cesrees_opinion: Authorisation | None = None
    cnil_authorisation: Authorisation | None = None
    other_basis: OtherLegalBasis | None = None
    dpo: DataProtectionOfficer
    retention: Retention

    @model_validator(mode="after")
    def _consistent(self) -> Regulatory:
        for route, requirements in ROUTE_REQUIREMENTS.items():
            for name, _ in requirements:
                if route != self.route and getattr(self, name) is not None:
                    raise ValueError(f"'{name}' belongs to the route {route}, not to {self.route}")
        opinion, authorisation = self.cesrees_opinion, self.cnil_authorisation
        if opinion and authorisation and authorisation.date < opinion.date:
            raise ValueError("the CNIL authorisation is dated before the CESREES opinion it follows")
        return self

    def missing(self) -> list[tuple[str, str]]:
        """What the route still requires: (field, sentence in French for the checklist), in order."""
        requirements = ROUTE_REQUIREMENTS[self.route]
        return [(name, sentence) for name, sentence in requirements if getattr(self, name) is None]

    def references(self) -> dict[str, str]:
        """The references the route relies on, as 'number (date)' texts, for manifests and the audit trail."""
        references = {}
        if self.reference_methodology:
            references["reference_methodology"] = self.reference_methodology
        # Audit records name the CNIL's decision cnil_decision since before the regulatory section.
        for name, key in (
            ("commitment", "commitment"),
            ("cesrees_opinion", "cesrees_opinion"),
            ("cnil_authorisation", "cnil_decision"),
        ):
            reference = getattr(self, name)
            if reference is not None:
                references[key] = f"{reference.number} ({reference.date})"
        if self.other_basis is not None:
            references["other_basis"] = f"{self.other_basis.reference} ({self.other_basis.date})"
        references["legal_basis"] = self.legal_basis
        return references


class Result(_Strict):
    """A result of the project (article, report, code), once declared: published in the directory."""

    title: Text
    url: Annotated[str, StringConstraints(pattern=r"^https://\S+$")]


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
    purpose: Text
    regulatory: Regulatory
    # Before datasets: the datasets validator reads it.
    linkage_approved: bool
    datasets: dict[str, list[SqlName]] = Field(min_length=1)
    population: Population
    study_period: StudyPeriod
    expires_on: date
    output_formats: list[Literal["parquet", "duckdb"]] = Field(min_length=1)
    results: list[Result] = Field(default_factory=list)

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
        return {"route": self.regulatory.route, **self.regulatory.references()}

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


def check_regulatory_file(project: Project) -> None:
    """Refuse a workspace while the project's route lacks a reference it requires."""
    missing = project.regulatory.missing()
    if missing:
        fields = ", ".join(name for name, _ in missing)
        raise WorkspaceRefused(
            "regulatory_file_incomplete",
            f"Project {project.id} follows the route {project.regulatory.route} but its regulatory file "
            f"lacks {fields}: no data can be extracted before the route's references are recorded in its "
            "project file (regulatory section).",
            project_id=project.id,
            field=f"regulatory.{missing[0][0]}",
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
