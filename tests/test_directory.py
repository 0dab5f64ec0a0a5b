"""The public directory of projects and the regulatory file: generated from the real project registry,
published as open data with a HealthDCAT-AP record validated by pySHACL, shown in the catalogue site, and
a workspace refused while its route lacks a reference (real files, real Dagster)."""

import csv
import json
import stat
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from hdh_pipelines.catalogue import AccessLevel, CatalogueInputs, build_catalogue, validate
from hdh_pipelines.catalogue.opendata import open_data_descriptions, open_data_statistics
from hdh_pipelines.catalogue.records import HubIdentity, dataset_record
from hdh_pipelines.catalogue.resources import CatalogueResource
from hdh_pipelines.normalisation.resources import WarehouseResource
from hdh_pipelines.rights.assets import project_directory
from hdh_pipelines.rights.directory import DIRECTORY_CSV, DIRECTORY_JSON, DIRECTORY_NAME, publish_directory
from hdh_pipelines.workspaces import WorkspaceRefused, load_project, scan_registry
from hdh_pipelines.workspaces.documents import REGULATORY_DOCUMENTS, write_regulatory_documents
from hdh_pipelines.workspaces.projects import check_regulatory_file
from hdh_pipelines.workspaces.resources import WorkspaceResource

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "projects"
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _write_project(folder: Path, project_id: str, **regulatory_changes) -> Path:
    document = yaml.safe_load((SAMPLES / "diabetes-drug-use.yaml").read_text())
    document["id"] = project_id
    regulatory = document["regulatory"]
    for name, value in regulatory_changes.items():
        if value is None:
            regulatory.pop(name, None)
        else:
            regulatory[name] = value
    path = folder / f"{project_id}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    """The two sample projects and one awaiting its reference-methodology commitment."""
    folder = tmp_path_factory.mktemp("projects")
    for sample in SAMPLES.glob("*.yaml"):
        (folder / sample.name).write_text(sample.read_text())
    _write_project(
        folder,
        "mr004-awaiting",
        route="reference_methodology",
        reference_methodology="MR-004",
        cesrees_opinion=None,
        cnil_authorisation=None,
    )
    return folder


@pytest.fixture(scope="module")
def open_data(registry, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("open_data")
    publish_directory(scan_registry(registry).projects.values(), folder, NOW)
    return folder


def test_directory_lists_every_project_with_its_route_and_no_natural_person(open_data, registry):
    rows = json.loads((open_data / DIRECTORY_NAME / DIRECTORY_JSON).read_text())["projects"]
    by_id = {row["project"]: row for row in rows}
    assert set(by_id) == {"diabetes-drug-use", "mi-outcomes-linked", "mr004-awaiting"}
    assert by_id["mi-outcomes-linked"]["status"] == "authorised"
    assert "cnil_decision: DR-2026-118 (2026-05-14)" in by_id["mi-outcomes-linked"]["references"]
    assert by_id["mr004-awaiting"]["status"] == "awaiting_authorisation"
    assert by_id["mr004-awaiting"]["references"] == "reference_methodology: MR-004"
    assert "protocole.pdf" in by_id["diabetes-drug-use"]["results"]
    with (open_data / DIRECTORY_NAME / DIRECTORY_CSV).open() as handle:
        assert [row["project"] for row in csv.DictReader(handle)] == sorted(by_id)
    published = "".join(p.read_text() for p in (open_data / DIRECTORY_NAME).iterdir())
    # The project leads are natural persons: their names never leave the registry.
    for project in scan_registry(registry).projects.values():
        assert project.lead.split(",")[0] not in published
    assert "Karim" not in published and "Claire" not in published
    assert "dpo@chu-valmont.example" in published


def test_directory_record_validates_and_the_site_shows_the_page(open_data, tmp_path):
    (description,) = open_data_descriptions(open_data)
    assert description.identifier == f"open_data/{DIRECTORY_NAME}"
    record = dataset_record(
        description,
        open_data_statistics(open_data, description),
        None,
        hub=HubIdentity(),
        site_page="https://catalogue.health-data-hub.example/site/projects.html",
        modified=NOW.date(),
    )
    assert validate(record, AccessLevel.PUBLIC).violations == ()
    built = build_catalogue(
        CatalogueInputs(raw_root=None, warehouse=None, open_data_dir=open_data),
        tmp_path / "catalogue",
        today=NOW.date(),
    )
    assert not [f for r in built.results.values() for f in r.violations]
    page = (built.folder / "projects.html").read_text()
    assert 'data-project="mr004-awaiting"' in page and "awaiting_authorisation" in page
    assert 'href="projects.html"' in (built.folder / "index.html").read_text()
    assert (built.folder / "records" / f"open_data__{DIRECTORY_NAME}.ttl").exists()


def test_directory_asset_publishes_with_counts_only(registry, tmp_path):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [project_directory],
            instance=instance,
            resources={
                "catalogue": CatalogueResource(
                    output_dir=str(tmp_path / "catalogue"), open_data_dir=str(tmp_path / "open")
                ),
                "workspaces": WorkspaceResource(
                    root=str(tmp_path / "ws"),
                    warehouse=WarehouseResource(path=str(tmp_path / "w.duckdb")),
                    projects_dir=str(registry),
                    audit_root=str(tmp_path / "audit"),
                ),
            },
        )
    assert result.success
    metadata = result.asset_materializations_for_node("rights__project_directory")[0].metadata
    assert metadata["projects"].value == 3 and metadata["status_awaiting_authorisation"].value == 1
    assert (tmp_path / "open" / DIRECTORY_NAME / DIRECTORY_JSON).exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (
            {"route": "reference_methodology", "cesrees_opinion": None, "cnil_authorisation": None},
            "regulatory.reference_methodology",
        ),
        ({"cnil_authorisation": None}, "regulatory.cnil_authorisation"),
        (
            {"route": "other_legal_basis", "cesrees_opinion": None, "cnil_authorisation": None},
            "regulatory.other_basis",
        ),
    ],
)
def test_a_route_without_its_references_is_refused_with_reason_and_field(tmp_path, changes, field):
    project = load_project(_write_project(tmp_path, "incomplete-route", **changes))
    with pytest.raises(WorkspaceRefused) as refused:
        check_regulatory_file(project)
    assert refused.value.reason == "regulatory_file_incomplete" and refused.value.field == field
    assert "no data can be extracted" in refused.value.message


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"reference_methodology": "MR-004"}, "belongs to the route reference_methodology"),
        (
            {"reference_methodology": "MR-009", "route": "reference_methodology"},
            "regulatory.reference_methodology",
        ),
        ({"dpo": {"contact": "Claire Martin"}}, "regulatory.dpo.contact"),
        (
            {"cnil_authorisation": {"number": "DR-1", "date": "2025-01-01"}},
            "dated before the CESREES opinion",
        ),
        ({"controller": None}, "regulatory.controller"),
    ],
)
def test_a_malformed_regulatory_section_is_an_invalid_project(tmp_path, changes, words):
    with pytest.raises(WorkspaceRefused) as refused:
        load_project(_write_project(tmp_path, "malformed-route", **changes))
    assert refused.value.reason == "invalid_project" and words in refused.value.message


def test_documents_are_french_owner_only_and_the_checklist_shows_what_remains(tmp_path):
    complete = load_project(SAMPLES / "mi-outcomes-linked.yaml")
    folder = tmp_path / "complete"
    folder.mkdir()
    paths = write_regulatory_documents(folder, complete, date(2026, 12, 4))
    assert [p.name for p in paths] == list(REGULATORY_DOCUMENTS)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in paths)
    record, notice, checklist = (p.read_text() for p in paths)
    assert '<html lang="fr">' in record and "Centre hospitalier universitaire de Valmont" in record
    assert "DR-2026-118" in record and "31/12/2029" in record
    assert "mes-droits" in notice and "CNIL" in notice
    assert "Dr Claire Martin" not in record + notice
    assert "✔ Obtenir l&#x27;autorisation de la CNIL" in checklist

    awaiting = load_project(
        _write_project(
            tmp_path,
            "mr004-awaiting",
            route="reference_methodology",
            reference_methodology="MR-004",
            cesrees_opinion=None,
            cnil_authorisation=None,
        )
    )
    folder = tmp_path / "awaiting"
    folder.mkdir()
    checklist = write_regulatory_documents(folder, awaiting, date(2026, 12, 4))[2].read_text()
    assert "☐ Joindre le récépissé de l&#x27;engagement de conformité" in checklist
    assert "✔ Indiquer la méthodologie de référence" in checklist
