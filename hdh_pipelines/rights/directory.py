"""The public directory of projects: who uses the hub's data, for what, under which authorisation.

Generated from the project registry alone and published as an open dataset
(``<open data dir>/project_directory/``: ``projects.csv``, ``projects.json``
and the ``metadata.json`` from which the catalogue makes its HealthDCAT-AP
record) and as the catalogue site's page ``projects.html``. Nothing in it
identifies a person: the controller is an organisation, the DPO a role and a
mailbox; the project lead's name, the population's definition and the keys
stay out.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

from hdh_pipelines.open_science.publish import OPEN_LICENCE, replace_folder
from hdh_pipelines.workspaces.projects import Project

DIRECTORY_NAME = "project_directory"
DIRECTORY_JSON = "projects.json"
DIRECTORY_CSV = "projects.csv"
DIRECTORY_COLUMNS = {
    "project": "identifier of the project in the hub's registry",
    "title": "title of the project",
    "controller": "data controller (an organisation)",
    "dpo": "data protection officer: role and contact address",
    "purpose": "purpose of the processing",
    "datasets": "datasets and columns made available, 'dataset: column, column; …'",
    "linkage": "whether the project is approved for linkage with an external cohort",
    "route": "regulatory route: reference_methodology, cnil_authorisation or other_legal_basis",
    "references": "the route's references (methodology, commitment, CESREES opinion, CNIL decision…)",
    "legal_basis": "GDPR legal bases of the processing",
    "study_start": "first day of the study period",
    "study_end": "last day of the study period",
    "expires_on": "last day data may be extracted for the project",
    "retention_until": "date by which the data user destroys the data",
    "status": "authorised, awaiting_authorisation or expired",
    "results": "declared results, 'title <url>; …'",
}


def project_status(project: Project, today: date) -> str:
    if today > project.expires_on:
        return "expired"
    return "awaiting_authorisation" if project.regulatory.missing() else "authorised"


def directory_rows(projects: Iterable[Project], today: date) -> list[dict]:
    rows = []
    for project in sorted(projects, key=lambda p: p.id):
        regulatory = project.regulatory
        references = {k: v for k, v in regulatory.references().items() if k != "legal_basis"}
        rows.append(
            {
                "project": project.id,
                "title": project.title,
                "controller": regulatory.controller,
                "dpo": f"{regulatory.dpo.role} <{regulatory.dpo.contact}>",
                "purpose": " ".join(project.purpose.split()),
                "datasets": "; ".join(
                    f"{name}: {', '.join(cols)}" for name, cols in project.datasets.items()
                ),
                "linkage": project.linkage_approved,
                "route": regulatory.route,
                "references": "; ".join(f"{k}: {v}" for k, v in references.items()),
                "legal_basis": regulatory.legal_basis,
                "study_start": project.study_period.start.isoformat(),
                "study_end": project.study_period.end.isoformat(),
                "expires_on": project.expires_on.isoformat(),
                "retention_until": regulatory.retention.until.isoformat(),
                "status": project_status(project, today),
                "results": "; ".join(f"{r.title} <{r.url}>" for r in project.results),
            }
        )
    return rows


def directory_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(DIRECTORY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def publish_directory(projects: Iterable[Project], open_data_dir: Path, now: datetime) -> Path:
    """Write the directory's open dataset into ``<open data dir>/project_directory/`` (swapped in whole)."""
    rows = directory_rows(projects, now.date())
    metadata = {
        "identifier": DIRECTORY_NAME,
        "title": "Répertoire public des projets utilisant les données du Health Data Hub",
        "description": "Every project the hub's registry holds: its controller (an organisation), purpose, "
        "datasets, regulatory route and references, dates, status and declared results. Generated from the "
        "project registry; it names no natural person.",
        "license": OPEN_LICENCE,
        "issued": now.isoformat(timespec="seconds"),
        "publisher": "Health Data Hub",
        "distributions": [
            {"file": DIRECTORY_CSV, "media_type": "text/csv"},
            {"file": DIRECTORY_JSON, "media_type": "application/json"},
        ],
        "columns": DIRECTORY_COLUMNS,
        "keywords": ["open data", DIRECTORY_NAME, "transparency", "research projects", "GDPR"],
    }

    def write(staging: Path) -> None:
        (staging / DIRECTORY_CSV).write_text(directory_csv(rows), encoding="utf-8")
        (staging / DIRECTORY_JSON).write_text(
            json.dumps({"generated_at": metadata["issued"], "projects": rows}, indent=2, ensure_ascii=False),
            encoding="utf-8",
        )
        (staging / "metadata.json").write_text(
            json.dumps(metadata, indent=2, ensure_ascii=False), encoding="utf-8"
        )

    folder = open_data_dir / DIRECTORY_NAME
    replace_folder(folder, write, private=False)
    return folder


def read_directory(open_data_dir: Path) -> list[dict] | None:
    """The published directory's rows, or None when none is published (for the catalogue site)."""
    path = open_data_dir / DIRECTORY_NAME / DIRECTORY_JSON
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["projects"]
