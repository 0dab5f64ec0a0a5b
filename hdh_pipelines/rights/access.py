"""Answer an access request: which projects received data about the person, when, under which authorisation.

The projects are those the workspace audit trail records as materialised
(``read_audit_trail``); a project received data about the person when its
workspace holds the person's project pseudonym (the HMAC the build computes
from the person's BEN_IDT_ANO with the project's key). Dates and
authorisations are the trail's; title and controller the registry's.

Limit (docs/rights.md): the workspace checked is the current one, so a person
removed since (an opposition, a narrowed population) is not found in it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from html import escape
from pathlib import Path

import duckdb

from hdh_pipelines.normalisation.warehouse import Warehouse
from hdh_pipelines.rights.requests import RightsRequest
from hdh_pipelines.workspaces import WorkspaceRefused, WorkspaceSettings, read_audit_trail
from hdh_pipelines.workspaces.datasets import PERSON_PSEUDONYM
from hdh_pipelines.workspaces.documents import RIGHTS_FORM_URL, french_page
from hdh_pipelines.workspaces.projects import load_project, project_file
from hdh_pipelines.workspaces.pseudonyms import install_project_key, load_project_key


@dataclass(frozen=True)
class ProjectDisclosure:
    project: str
    title: str
    controller: str
    first_provided: str
    last_provided: str
    authorisation: Mapping[str, str]


def person_of(warehouse: Warehouse, ben_nir_psa: str, ben_rng_gem: int) -> str | None:
    """The person (BEN_IDT_ANO) behind a national pseudonym, or None when the hub does not hold it."""
    with warehouse.read_only() as connection:
        found = connection.execute(
            "select any_value(ben_idt_ano) from intermediate.int_pseudonym_persons "
            "where ben_nir_psa = ? and ben_rng_gem = ?",
            [ben_nir_psa, ben_rng_gem],
        ).fetchone()
    return found[0] if found else None


def _holds(workspace: Path, key: bytes, person: str) -> bool:
    files = [str(path) for path in sorted((workspace / "parquet").glob("**/*.parquet"))]
    if not files:
        return False
    with duckdb.connect() as connection:
        install_project_key(connection, key)
        return bool(
            connection.execute(
                f"select count(*) from read_parquet($files, union_by_name = true) "
                f"where {PERSON_PSEUDONYM} = project_pseudonym('person', $person)",
                {"files": files, "person": person},
            ).fetchone()[0]
        )


def projects_for_person(
    settings: WorkspaceSettings, request: RightsRequest, environ: Mapping[str, str] = os.environ
) -> list[ProjectDisclosure]:
    person = person_of(settings.warehouse, request.ben_nir_psa, request.ben_rng_gem)
    if person is None:
        return []
    materialised: dict[str, list[dict]] = {}
    for record in read_audit_trail(settings.audit_root):
        if record["outcome"] == "materialised":
            materialised.setdefault(record["project"], []).append(record)
    disclosures = []
    for project_id, records in sorted(materialised.items()):
        key = load_project_key(project_id, settings.secrets_file, environ)
        if not _holds(settings.root / project_id, key, person):
            continue
        try:
            project = load_project(project_file(settings.projects_dir, project_id))
            title, controller = project.title, project.regulatory.controller
        except WorkspaceRefused:
            title, controller = f"Projet {project_id} (retiré du répertoire)", "non précisé"
        disclosures.append(
            ProjectDisclosure(
                project=project_id,
                title=title,
                controller=controller,
                first_provided=records[0]["recorded_at"][:10],
                last_provided=records[-1]["recorded_at"][:10],
                authorisation=records[-1]["approval_references"],
            )
        )
    return disclosures


def _french_date(iso_day: str) -> str:
    return date.fromisoformat(iso_day).strftime("%d/%m/%Y")


def _references(authorisation: Mapping[str, str]) -> str:
    return "; ".join(f"{name} : {value}" for name, value in authorisation.items() if name != "route")


def access_letter_html(request: RightsRequest, disclosures: list[ProjectDisclosure], today: date) -> str:
    """The answer to an access request, in French, for the hub's staff to send through the website."""
    if disclosures:
        rows = "".join(
            f"<tr><td>{escape(d.title)}</td><td>{escape(d.controller)}</td>"
            f"<td>du {_french_date(d.first_provided)} au {_french_date(d.last_provided)}</td>"
            f"<td>{escape(_references(d.authorisation))}</td></tr>"
            for d in disclosures
        )
        found = (
            f"<p>Des données vous concernant ont été mises à disposition de {len(disclosures)} projet(s), "
            "toujours sous un pseudonyme propre à chaque projet, jamais sous votre nom :</p>"
            "<table><tr><th>Projet</th><th>Responsable du traitement</th><th>Mises à disposition</th>"
            f"<th>Autorisation</th></tr>{rows}</table>"
        )
    else:
        found = (
            "<p>À ce jour, aucun projet ne dispose de données vous concernant dans les espaces projet du "
            "Health Data Hub.</p>"
        )
    body = (
        f"<p>Référence de votre demande : {escape(request.request_id)} (reçue le "
        f"{request.created_at:%d/%m/%Y}). Réponse du {today:%d/%m/%Y}.</p>"
        "<p>Madame, Monsieur,</p><p>Vous avez demandé quels projets ont reçu des données vous concernant.</p>"
        f"{found}"
        "<p>Le répertoire public des projets décrit chacun d'eux (finalité, données, autorisations). Vous "
        "pouvez vous opposer à la réutilisation de vos données ou poser une question par le formulaire : "
        f"{escape(RIGHTS_FORM_URL)}. Vous pouvez aussi introduire une réclamation auprès de la CNIL.</p>"
        "<p>Le Health Data Hub, service des droits des personnes.</p>"
    )
    return french_page("Réponse à votre demande d'accès", body)
