"""What a workspace says about itself: README, data dictionary and manifest, from what was written.

Every document is generated from the extract actually written (its column
names and types as read back from the files), so it describes exactly what
is inside and names nothing that is not.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from hdh_pipelines.workspaces.datasets import EXTRACTABLE_DATASETS, PERSON_PSEUDONYM
from hdh_pipelines.workspaces.projects import Project

PSEUDONYM_DESCRIPTIONS = {
    PERSON_PSEUDONYM: "The person, as a pseudonym proper to this project (HMAC-SHA-256 with the "
    "project's key): joins the tables of this workspace, and nothing outside it.",
    "claim_id": "The claim, as a pseudonym proper to this project: joins this workspace's claims and "
    "drug dispensations.",
    "stay_id": "The hospital stay, as a pseudonym proper to this project: joins this workspace's stays and "
    "their diagnoses.",
}


@dataclass(frozen=True)
class ColumnDoc:
    name: str
    type: str
    description: str


@dataclass(frozen=True)
class DatasetDoc:
    name: str
    rows: int
    columns: list[ColumnDoc]
    months: list[str]


def dictionary_csv(datasets: list[DatasetDoc]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dataset", "column", "type", "description"])
    for dataset in datasets:
        for column in dataset.columns:
            writer.writerow([dataset.name, column.name, column.type, column.description])
    return out.getvalue()


def readme_markdown(project: Project, datasets: list[DatasetDoc], manifest: dict) -> str:
    period = project.study_period
    months = manifest["months"]
    lines = [
        f"# Workspace of project {project.id}: {project.title}",
        "",
        f"Lead: {project.lead}. Purpose: {project.purpose}",
        "",
        f"Authorised by CESREES opinion {project.authorisations.cesrees.number} "
        f"({project.authorisations.cesrees.date}) and CNIL decision {project.authorisations.cnil.number} "
        f"({project.authorisations.cnil.date}); legal basis: {project.legal_basis}. "
        f"This workspace may be used until {project.expires_on}.",
        "",
        f"Generated {manifest['generated_at']} by run {manifest['run_id']}. Study period {period.start} to "
        f"{period.end}; months present: {months[0] + ' to ' + months[-1] if months else 'none'} "
        f"({len(months)}).",
        "",
        "Persons who opted out of the reuse of their data are absent, as of the opt-out registry version "
        f"{manifest['opt_out_registry_version'].get('digest', 'unknown')}. Identifiers are pseudonyms proper "
        "to this project: they cannot be joined with any other project's extract.",
        "",
        "## Contents",
        "",
        "| dataset | rows | columns | files |",
        "|---|---|---|---|",
    ]
    for dataset in datasets:
        files = (
            f"parquet/{dataset.name}/month=YYYY-MM/*.parquet"
            if EXTRACTABLE_DATASETS[dataset.name].period_column
            else f"parquet/{dataset.name}.parquet"
        )
        lines.append(f"| {dataset.name} | {dataset.rows} | {len(dataset.columns)} | `{files}` |")
    if "duckdb" in project.output_formats:
        lines += ["", "`workspace.duckdb` holds the same data, one table per dataset."]
    lines += [
        "",
        "Every column is described in `data_dictionary.csv`; `manifest.json` lists sources and counts.",
        "",
    ]
    for dataset in datasets:
        lines += [f"## {dataset.name}", "", EXTRACTABLE_DATASETS[dataset.name].description, ""]
        lines += [f"- `{column.name}` ({column.type}): {column.description}" for column in dataset.columns]
        lines.append("")
    return "\n".join(lines)


def manifest_json(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode()


def read_manifest(workspace: Path) -> dict | None:
    try:
        return json.loads((workspace / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def dbt_column_descriptions(models_dir: Path) -> dict[str, dict[str, str]]:
    """Model -> column -> description, from the dbt project's model YAML files."""
    descriptions: dict[str, dict[str, str]] = {}
    for path in sorted(models_dir.rglob("*.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for model in document.get("models") or []:
            descriptions[model["name"]] = {
                column["name"]: " ".join(str(column.get("description", "")).split())
                for column in model.get("columns") or []
            }
    return descriptions
