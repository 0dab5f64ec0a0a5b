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


def readme_markdown(datasets: list[DatasetDoc], manifest: dict) -> str:
    """The README, from the manifest alone: a purge rewrites it without needing the project file."""
    period = manifest["study_period"]
    approvals = manifest["approval_references"]
    months = manifest["months"]
    purges = manifest.get("opt_out_purges", [])
    lines = [
        f"# Workspace of project {manifest['project']}: {manifest['title']}",
        "",
        f"Lead: {manifest['lead']}. Purpose: {manifest['purpose']}",
        "",
        f"Authorised by CESREES opinion {approvals['cesrees_opinion']} and CNIL decision "
        f"{approvals['cnil_decision']}; legal basis: {approvals['legal_basis']}. "
        f"This workspace may be used until {manifest['expires_on']}.",
        "",
        f"Generated {manifest['generated_at']} by run {manifest['run_id']}. "
        f"Study period {period['start']} to {period['end']}; "
        f"months present: {months[0] + ' to ' + months[-1] if months else 'none'} ({len(months)}).",
        "",
        "Persons who opted out of the reuse of their data are absent, as of the opt-out registry version "
        f"{manifest['opt_out_registry_version'].get('digest', 'unknown')}. Identifiers are pseudonyms proper "
        "to this project: they cannot be joined with any other project's extract.",
        "",
    ]
    if purges:
        lines += [
            f"Since it was generated, persons who opted out were removed {len(purges)} time(s), last on "
            f"{purges[-1]['purged_at']}: rows of theirs you copied elsewhere must be deleted too.",
            "",
        ]
    lines += [
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
    if "duckdb" in manifest["output_formats"]:
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


def read_dictionary(workspace: Path) -> dict[str, list[ColumnDoc]]:
    """Dataset -> its columns, as ``data_dictionary.csv`` of a published workspace describes them."""
    columns: dict[str, list[ColumnDoc]] = {}
    with (workspace / "data_dictionary.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            columns.setdefault(row["dataset"], []).append(
                ColumnDoc(row["column"], row["type"], row["description"])
            )
    return columns
