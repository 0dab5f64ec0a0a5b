"""The catalogue end to end on real inputs: raw Parquet from the synthetic SNDS generator, a warehouse
built by a real `dbt run`, pySHACL against the HealthDCAT-AP shapes, and the site opened in headless
Chromium (the OS package)."""

import csv
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dbt_inputs import write_synthetic_raw
from rdflib import Graph, Namespace, URIRef
from rdflib.namespace import DCTERMS

from hdh_pipelines.catalogue import AccessLevel, CatalogueInputs, ValidatorNotFound, build_catalogue, validate
from hdh_pipelines.catalogue.assets import healthdcat_catalogue
from hdh_pipelines.catalogue.records import ACCESS_RIGHTS, HubIdentity, dataset_iri
from hdh_pipelines.catalogue.resources import CatalogueResource
from hdh_pipelines.catalogue.sources import raw_descriptions
from hdh_pipelines.ingestion.resources import HubResource
from hdh_pipelines.normalisation.resources import WarehouseResource
from hdh_pipelines.normalisation.warehouse import DuckDBWarehouse
from hdh_pipelines.open_science.publish import OPEN_DISPENSATIONS, publish_open_dispensations
from hdh_pipelines.registry import default_registry

REPO = Path(__file__).resolve().parents[1]
SNDS_DICO = Path(__file__).resolve().parents[2] / "shared/reference/snds/dico-snds/app/app_data"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TODAY = date(2026, 1, 15)
ETALAB_LICENCE = URIRef("http://spdx.org/licenses/etalab-2.0")
# rdflib's closed DCAT namespace warns when pytest inspects the module; an open one does not.
DCAT = Namespace("http://www.w3.org/ns/dcat#")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> CatalogueInputs:
    """500 synthetic persons delivered once, and a warehouse built from them by `dbt build`."""
    folder = tmp_path_factory.mktemp("catalogue_inputs")
    raw_root, warehouse = folder / "raw", folder / "warehouse.duckdb"
    write_synthetic_raw(raw_root, persons=500)
    environment = {
        **os.environ,
        "HDH_WAREHOUSE_PATH": str(warehouse),
        "HDH_RAW_ROOT": str(raw_root),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    project = REPO / "dbt_project"
    result = subprocess.run(
        [
            str(REPO / ".venv/bin/dbt"),
            "build",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
            "--target-path",
            str(folder / "target"),
            "--log-path",
            str(folder / "logs"),
        ],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    return CatalogueInputs(raw_root=raw_root, warehouse=DuckDBWarehouse(warehouse))


@pytest.fixture(scope="module")
def open_data_dir(inputs, tmp_path_factory) -> Path:
    """The open dataset published from the fixture's warehouse by the open-science code itself."""
    public_root = tmp_path_factory.mktemp("open_data")
    with inputs.warehouse.read_only() as connection:
        publish_open_dispensations(
            connection, inputs.warehouse, public_root, now=datetime(2026, 1, 15, tzinfo=UTC)
        )
    return public_root


@pytest.fixture(scope="module")
def built(inputs, open_data_dir, tmp_path_factory):
    with_open_data = replace(inputs, open_data_dir=open_data_dir)
    return build_catalogue(with_open_data, tmp_path_factory.mktemp("public") / "catalogue", today=TODAY)


def test_every_dataset_has_a_record_and_all_validate_with_zero_violations(built):
    identifiers = {entry.description.identifier for entry in built.entries}
    assert {"raw/ir_ben_r", "raw/t_mcoaab", "marts/persons", "omop/omop_person"} <= identifiers
    assert built.records == len(identifiers) == len(list((built.folder / "records").glob("*.ttl")))
    assert set(built.results) == {AccessLevel.NON_PUBLIC, AccessLevel.PUBLIC}
    assert built.violations == 0, [f for r in built.results.values() for f in r.violations][:5]
    catalogue = Graph().parse(built.folder / "catalogue.ttl")
    as_json_ld = Graph().parse(built.folder / "catalogue.jsonld", format="json-ld")
    assert len(catalogue) == len(as_json_ld) > 0
    validation = json.loads((built.folder / "validation.json").read_text())
    assert validation["non-public"]["violations"] == validation["public"]["violations"] == 0


def test_records_carry_the_measured_statistics(built):
    record = Graph().parse(built.folder / "records" / "raw__er_prs_f.ttl")
    subject = dataset_iri(
        HubIdentity(), next(e.description for e in built.entries if e.description.name == "ER_PRS_F")
    )
    health = "http://healthdataportal.eu/ns/health#"
    individuals = record.value(subject, URIRef(health + "numberOfUniqueIndividuals"))
    assert individuals is not None and int(individuals) >= 11
    assert record.value(subject, URIRef(health + "minTypicalAge")) is not None
    assert record.value(subject, DCTERMS.temporal) is not None
    assert str(record.value(subject, URIRef("http://data.europa.eu/r5r/applicableLegislation"))) == (
        "http://data.europa.eu/eli/reg/2025/327/oj"
    )
    omop = next(e for e in built.entries if e.description.identifier == "omop/omop_person")
    assert omop.statistics.individuals is not None and "marts/persons" in omop.description.derived_from


def test_small_counts_are_suppressed_and_no_identifier_is_published(built, inputs):
    # The synthetic cohort and opt-out registry hold fewer than 11 rows: no count may appear.
    small = [e for e in built.entries if e.statistics.records_suppressed]
    assert small, "the synthetic population should have at least one table under the threshold"
    health = "http://healthdataportal.eu/ns/health#"
    for entry in small:
        record = Graph().parse(built.folder / "records" / f"{entry.description.slug}.ttl")
        assert not list(record.objects(None, URIRef(health + "numberOfRecords")))
        page = (built.folder / "datasets" / f"{entry.description.slug}.html").read_text()
        assert "&lt; 11 (suppressed)" in page
    with duckdb.connect() as connection:
        pseudonyms = {
            row[0]
            for row in connection.execute(
                f"SELECT DISTINCT BEN_NIR_PSA FROM read_parquet('{inputs.raw_root}/*/*/IR_BEN_R/*.parquet')"
            ).fetchall()
        }
    published = "".join(p.read_text() for p in built.folder.rglob("*") if p.is_file())
    assert pseudonyms and not any(p in published for p in pseudonyms)


def test_open_dataset_has_a_public_record_with_its_licence_that_validates(built):
    entry = next(e for e in built.entries if e.description.name == OPEN_DISPENSATIONS)
    assert entry.description.identifier == f"open_data/{OPEN_DISPENSATIONS}"
    record = Graph().parse(built.folder / "records" / f"{entry.description.slug}.ttl")
    subject = dataset_iri(HubIdentity(), entry.description)
    assert record.value(subject, DCTERMS.accessRights) == ACCESS_RIGHTS[AccessLevel.PUBLIC]
    distributions = set(record.objects(subject, DCAT.distribution))
    media_types = {str(record.value(d, DCAT.mediaType)).rsplit("/", 1)[-1] for d in distributions}
    assert media_types == {"csv", "vnd.apache.parquet"}
    assert all(record.value(d, DCTERMS.license) == ETALAB_LICENCE for d in distributions)
    assert not list(record.objects(subject, URIRef("https://w3id.org/dpv#hasPersonalData")))
    assert "marts/drug_dispensations" in entry.description.derived_from
    # Validated on its own at the public level: 0 violations (and the whole build's public level too).
    assert validate(record, AccessLevel.PUBLIC).violations == ()
    assert not built.results[AccessLevel.PUBLIC].violations
    # A public record is not accepted as non-public: the level really is checked.
    assert any(
        f.path == str(DCTERMS.accessRights) for f in validate(record, AccessLevel.NON_PUBLIC).violations
    )
    index = (built.folder / "index.html").read_text()
    assert f'href="datasets/{entry.description.slug}.html"' in index
    page = (built.folder / "datasets" / f"{entry.description.slug}.html").read_text()
    assert "etalab-2.0" in page and f"{OPEN_DISPENSATIONS}.parquet" in page


def test_shacl_check_is_not_vacuous(built):
    record = Graph().parse(built.folder / "records" / "raw__ir_ben_r.ttl")
    record.remove((None, DCTERMS.accessRights, None))
    result = validate(record, AccessLevel.NON_PUBLIC)
    assert any(str(DCTERMS.accessRights) == f.path for f in result.violations)


def test_a_failed_build_leaves_the_published_catalogue_untouched(inputs, built, tmp_path):
    before = (built.folder / "index.html").read_text()
    broken = CatalogueInputs(raw_root=inputs.raw_root, warehouse=inputs.warehouse, validator_dir=tmp_path)
    with pytest.raises(ValidatorNotFound) as failure:
        build_catalogue(broken, built.folder, today=TODAY)
    assert failure.value.reason == "shacl_validator_missing"
    assert (built.folder / "index.html").read_text() == before
    assert not [p for p in built.folder.parent.iterdir() if p.name.endswith(".tmp")]


def _open_in_chromium(url: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install -y chromium")
def test_headless_browser_finds_a_dataset_by_one_of_its_variables(built):
    dom = _open_in_chromium((built.folder / "index.html").as_uri() + "?q=PHA_PRS_C13")
    assert 'data-dataset="raw/er_pha_f"' in dom
    assert 'data-dataset="raw/ir_ben_r"' not in dom
    assert "variables: PHA_PRS_C13" in dom


def _reference_links(supported: set[str]) -> set[tuple[str, str, tuple[tuple[str, str], ...]]]:
    """snds_links.csv among the supported tables, as (from, to, ((column, referenced column), ...))."""
    with (SNDS_DICO / "snds_nodes.csv").open(encoding="utf-8") as handle:
        names = {row["index"]: row["name"] for row in csv.DictReader(handle)}
    links = set()
    with (SNDS_DICO / "snds_links.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            source, target = names[row["source"]], names[row["target"]]
            if source in supported and target in supported:
                keys = row["joint_var"].split("|")[0]
                pairs = []
                for part in keys.split("=>")[0].split("+"):
                    pairs.append(part.strip())
                targets = keys.split("=>")[1].split("+") if "=>" in keys else pairs
                links.add((source, target, tuple(zip(pairs, (t.strip() for t in targets), strict=True))))
    return links


def test_dictionary_join_links_agree_with_the_snds_dictionary():
    # The curated datasets: the generated ones take their links from schema-snds's foreign keys, which
    # tests/test_dictionary.py compares with dico-snds's links.
    registry = default_registry()
    curated = {name for name in registry.names() if not registry.resolve(name).generated}
    descriptions = [d for d in raw_descriptions(registry) if d.family == "SNDS" and d.name in curated]
    by_id = {d.identifier: d.name for d in descriptions}
    ours = {
        (
            by_id[link.source],
            by_id[link.target],
            tuple(zip(link.source_columns, link.target_columns, strict=True)),
        )
        for d in descriptions
        for link in d.links
    }
    assert ours == _reference_links(set(by_id.values()))


def test_nomenclatures_agree_with_the_snds_dictionary():
    with (SNDS_DICO / "snds_vars.csv").open(encoding="utf-8") as handle:
        reference = {(row["table"], row["var"]): row["nomenclature"] for row in csv.DictReader(handle)}
    registry = default_registry()
    # The curated datasets' own columns; a generated one, and the columns a curated one's overlay adds,
    # carry their nomenclatures from schema-snds itself.
    for name in [n for n in registry.names() if not registry.resolve(n).generated]:
        for field in registry.resolve(name).own_fields:
            expected = reference.get((name, field.name), "-")
            ours = field.nomenclature.split(":", 1)[0] if field.nomenclature else None
            if ours is not None or (expected not in ("-", "") and registry.resolve(name).family == "SNDS"):
                assert ours == expected, (name, field.name)


def test_every_registered_nomenclature_reaches_the_catalogue_variables():
    """The catalogue names each raw column's code list from the registry: generated datasets' too."""
    registry = default_registry()
    shown = {(d.name, v.name): v.nomenclature for d in raw_descriptions(registry) for v in d.variables}
    registered = {
        (name, f.name): f.nomenclature.split(":", 1)[0]
        for name in registry.names()
        for f in registry.resolve(name).fields
        if f.nomenclature
    }
    assert len(registered) > 900
    assert {key: shown[key] for key in registered} == registered
    assert shown[("IR_BEN_R", "BEN_SEX_COD")] == "IR_SEX_V"
    assert shown[("ER_ETE_F", "ETE_IND_TAA")] == "IR_TAA_V"


def test_dagster_asset_materialises_with_its_metadata(inputs, open_data_dir, tmp_path):
    output = tmp_path / "site"
    resources = {
        "catalogue": CatalogueResource(output_dir=str(output), open_data_dir=str(open_data_dir)),
        # The catalogue reads only the hub's storage, never its keys.
        "hub": HubResource(
            private_root=str(inputs.raw_root.parent), keyring_file="unused", provider_registry_file="unused"
        ),
        "warehouse": WarehouseResource(path=str(inputs.warehouse.path)),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize([healthdcat_catalogue], instance=instance, resources=resources)
    assert result.success
    metadata = result.asset_materializations_for_node("catalogue__healthdcat_catalogue")[0].metadata
    assert metadata["shacl_violations"].value == 0
    assert metadata["record_count"].value == len(list((output / "records").glob("*.ttl")))
    assert metadata["site"].value == str(output / "index.html")
    assert metadata["shacl_levels"].value == "public, non-public"
    assert (output / "records" / f"open_data__{OPEN_DISPENSATIONS}.ttl").exists()
    deps = {key.to_user_string() for key in healthdcat_catalogue.asset_deps[healthdcat_catalogue.key]}
    assert {"raw/ir_ben_r", "marts/persons", "omop/omop_person", "open_science/open_dispensations"} <= deps
