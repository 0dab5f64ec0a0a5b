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
from datetime import date
from html import escape
from pathlib import Path

from hdh_pipelines.core.private_files import write_private_file
from hdh_pipelines.workspaces.datasets import EXTRACTABLE_DATASETS, PERSON_PSEUDONYM
from hdh_pipelines.workspaces.projects import ROUTE_REQUIREMENTS, Project

REGULATORY_DIR = "regulatory"
# Where persons exercise their rights over the hub's data (docs/rights.md); named in every notice.
RIGHTS_FORM_URL = "https://www.health-data-hub.example/mes-droits"
ROUTE_LABELS = {
    "reference_methodology": "engagement de conformité à une méthodologie de référence de la CNIL",
    "cnil_authorisation": "autorisation de la CNIL après avis du CESREES",
    "other_legal_basis": "autre base légale documentée",
}

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
        f"Controller: {manifest['controller']}. Route: {approvals['route']} ("
        + "; ".join(f"{name}: {value}" for name, value in approvals.items() if name != "route")
        + f"). This workspace may be used until {manifest['expires_on']}; its data are destroyed by "
        f"{manifest['retention_until']}. The documents the data user keeps are in `{REGULATORY_DIR}/`.",
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


def read_dictionary(workspace: Path) -> dict[str, list[ColumnDoc]]:
    """Dataset -> its columns, as ``data_dictionary.csv`` of a published workspace describes them."""
    columns: dict[str, list[ColumnDoc]] = {}
    with (workspace / "data_dictionary.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            columns.setdefault(row["dataset"], []).append(
                ColumnDoc(row["column"], row["type"], row["description"])
            )
    return columns


# The documents a data user keeps (regulatory file, in French): generated from the project file alone.

_DOCUMENT_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem;color:#1d2733}"
    "th,td{border:1px solid #ccd;padding:.3rem .5rem;text-align:left;vertical-align:top}"
    "table{border-collapse:collapse;width:100%}th{background:#eef2f7;width:30%}.todo{color:#a31515}"
    ".done{color:#106b21}"
)


def french_page(title: str, body: str) -> str:
    """A standalone French HTML page (no external resource); ``body`` is already escaped HTML."""
    return (
        f'<!DOCTYPE html>\n<html lang="fr"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_DOCUMENT_STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n"
    )


def _references_fr(project: Project) -> str:
    regulatory = project.regulatory
    parts = [f"Voie : {ROUTE_LABELS[regulatory.route]}"]
    if regulatory.reference_methodology:
        parts.append(f"méthodologie de référence {regulatory.reference_methodology}")
    labels = (
        ("commitment", "récépissé d'engagement de conformité"),
        ("cesrees_opinion", "avis du CESREES"),
        ("cnil_authorisation", "autorisation de la CNIL"),
    )
    for name, label in labels:
        reference = getattr(regulatory, name)
        if reference is not None:
            parts.append(f"{label} n° {reference.number} du {reference.date:%d/%m/%Y}")
    if regulatory.other_basis is not None:
        basis = regulatory.other_basis
        parts.append(f"{basis.description} ({basis.reference}, {basis.date:%d/%m/%Y})")
    return escape("; ".join(parts) + ".")


def _datasets_fr(project: Project) -> str:
    return escape("; ".join(f"{name} ({', '.join(columns)})" for name, columns in project.datasets.items()))


def _table(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def processing_record_html(project: Project) -> str:
    """The entry for the data user's record of processing activities (GDPR art. 30, registre)."""
    regulatory = project.regulatory
    period = project.study_period
    rows = [
        ("Nom du traitement", escape(project.title)),
        ("Responsable du traitement", escape(regulatory.controller)),
        ("Délégué à la protection des données", escape(f"{regulatory.dpo.role} : {regulatory.dpo.contact}")),
        ("Finalité", escape(project.purpose)),
        ("Base légale (RGPD)", escape(regulatory.legal_basis)),
        ("Formalités", _references_fr(project)),
        (
            "Personnes concernées",
            "Personnes dont les données figurent dans le SNDS et répondent aux critères de la population "
            "du projet, à l'exception de celles qui se sont opposées à la réutilisation de leurs données.",
        ),
        ("Catégories de données", _datasets_fr(project)),
        (
            "Période des données",
            escape(f"du {period.start:%d/%m/%Y} au {period.end:%d/%m/%Y}"),
        ),
        (
            "Source",
            "Système national des données de santé, mis à disposition par le Health Data Hub sous "
            "pseudonymes propres au projet"
            + (" ; cohorte hospitalière appariée" if project.linkage_approved else "")
            + ".",
        ),
        ("Destinataires", "L'équipe du projet, dans l'espace projet sécurisé du Health Data Hub."),
        ("Transferts hors de l'Union européenne", "Aucun."),
        (
            "Durée de conservation",
            escape(f"jusqu'au {regulatory.retention.until:%d/%m/%Y} : {regulatory.retention.justification}"),
        ),
        (
            "Mesures de sécurité",
            "Pseudonymes propres au projet (HMAC-SHA-256), extraction limitée aux colonnes, à la population "
            "et à la période autorisées, stockage réservé au projet, journal d'audit des extractions.",
        ),
    ]
    return french_page(f"Registre des traitements : {project.title}", _table(rows))


def information_notice_html(project: Project, rights_form_url: str) -> str:
    """The information notice for the persons concerned (GDPR art. 14: data not collected from them)."""
    regulatory = project.regulatory
    body = (
        f"<p>{escape(regulatory.controller)} réalise l'étude « {escape(project.title)} ». "
        f"{escape(project.purpose)}</p>"
        "<h2>Quelles données ?</h2><p>Des données de remboursement de soins et d'hospitalisation issues du "
        "Système national des données de santé (SNDS), sans nom ni numéro de sécurité sociale : chaque "
        f"personne y figure sous un pseudonyme propre à l'étude. Données utilisées : {_datasets_fr(project)}."
        "</p>"
        f"<h2>Sur quel fondement ?</h2><p>{escape(regulatory.legal_basis)}. {_references_fr(project)}</p>"
        "<h2>Combien de temps ?</h2><p>Les données sont conservées jusqu'au "
        f"{regulatory.retention.until:%d/%m/%Y}, puis détruites.</p>"
        "<h2>Vos droits</h2><p>Vous pouvez vous opposer à l'utilisation de vos données, retirer votre "
        "opposition, demander quels projets ont reçu des données vous concernant ou poser une question, par "
        f'le formulaire du Health Data Hub : <a href="{escape(rights_form_url)}">'
        f"{escape(rights_form_url)}</a>. Une opposition s'applique à toutes les données mises à disposition "
        "ensuite et retire vos données des espaces projet existants. Vous pouvez aussi écrire au délégué à "
        "la protection des données du "
        f"responsable du traitement ({escape(regulatory.dpo.contact)}) et introduire une réclamation auprès "
        "de la CNIL (www.cnil.fr).</p>"
    )
    return french_page(f"Information des personnes : {project.title}", body)


def checklist_html(project: Project, today: date) -> str:
    """What the data user has done and what remains to do, from the project file, as of ``today``."""
    regulatory = project.regulatory
    items: list[tuple[bool, str]] = [
        (True, f"Voie réglementaire déclarée : {ROUTE_LABELS[regulatory.route]}."),
    ]
    missing = dict(regulatory.missing())
    for name, sentence in ROUTE_REQUIREMENTS[regulatory.route]:
        items.append((name not in missing, sentence[0].upper() + sentence[1:] + "."))
    items += [
        (
            False,
            "Inscrire le traitement dans votre registre des traitements "
            "(document registre_traitements.html).",
        ),
        (
            False,
            "Publier la note d'information des personnes (document information_personnes.html) sur votre "
            "site ; le projet figure au répertoire public des projets du Health Data Hub.",
        ),
        (
            today <= project.expires_on,
            f"Autorisation d'accès aux données valable jusqu'au {project.expires_on:%d/%m/%Y}.",
        ),
        (
            False,
            f"Détruire les données et leurs copies au plus tard le {regulatory.retention.until:%d/%m/%Y}.",
        ),
        (
            bool(project.results),
            "Déclarer les résultats publiés (rubrique results du fichier projet) pour le répertoire public.",
        ),
    ]
    rows = "".join(
        f'<li class="{"done" if done else "todo"}">{"✔" if done else "☐"} {escape(text)}</li>'
        for done, text in items
    )
    remaining = sum(not done for done, _ in items)
    body = f"<p>État au {today:%d/%m/%Y} : {remaining} point(s) restant(s).</p><ul>{rows}</ul>"
    return french_page(f"Liste de contrôle : {project.title}", body)


REGULATORY_DOCUMENTS = ("registre_traitements.html", "information_personnes.html", "liste_controle.html")


def write_regulatory_documents(
    folder: Path, project: Project, today: date, rights_form_url: str = RIGHTS_FORM_URL
) -> list[Path]:
    """Write the three documents into ``folder`` (owner-only files); return their paths."""
    pages = (
        processing_record_html(project),
        information_notice_html(project, rights_form_url),
        checklist_html(project, today),
    )
    paths = []
    for name, page in zip(REGULATORY_DOCUMENTS, pages, strict=True):
        write_private_file(folder / name, page.encode())
        paths.append(folder / name)
    return paths
