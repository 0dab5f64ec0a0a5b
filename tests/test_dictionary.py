"""The SNDS dictionary, the cartography and the product records, built by the real catalogue build.

The expectations are read from the references themselves (schema-snds, dico-snds, nomenclatures), parsed
here independently of ``hdh_pipelines.catalogue.snds_reference``; the hub's side is two synthetic
deliveries of different years. The site is opened in a real headless Chromium (DevTools protocol).
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

import pytest
from dbt_inputs import write_synthetic_raw
from rdflib import Graph, Namespace, URIRef
from rdflib.namespace import DCTERMS, FOAF
from ui_support import DevToolsPage, chromium_page

from hdh_pipelines.catalogue import CatalogueInputs, build_catalogue
from hdh_pipelines.catalogue.dictionary import compare_join_keys
from hdh_pipelines.catalogue.model import JoinLink
from hdh_pipelines.catalogue.records import HubIdentity
from hdh_pipelines.catalogue.snds_reference import read_snds_reference

REPO = Path(__file__).resolve().parents[1]
SNDS = Path(__file__).resolve().parents[2] / "shared/reference/snds"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "var" / "test-artifacts"
TODAY = date(2026, 1, 15)
SITE = "https://catalogue.example/site/"
DCAT = Namespace("http://www.w3.org/ns/dcat#")
# What one search over every table, variable and code of the SNDS may take in the browser: measured at
# 50 to 170 ms with 20 processes sharing 2 cores; the budget leaves room for a loaded CI machine.
SEARCH_BUDGET_MS = 500


def _schemas() -> dict[str, dict]:
    return {
        document["name"]: document
        for document in (
            json.loads(path.read_text(encoding="utf-8"))
            for path in (SNDS / "schema-snds/schemas").rglob("*.json")
        )
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two deliveries (years 2023 and 2025 of the per-year tables, loaded in 2024 and 2026), then a build."""
    folder = tmp_path_factory.mktemp("dictionary")
    raw_root = folder / "raw"
    write_synthetic_raw(raw_root, persons=40, year=2023, delivery_id="d-2023", loaded_at=datetime(2024, 2, 1))
    write_synthetic_raw(raw_root, persons=40, year=2025, delivery_id="d-2025", loaded_at=datetime(2026, 1, 5))
    started = time.monotonic()
    build = build_catalogue(
        CatalogueInputs(raw_root=raw_root, warehouse=None, site_url=SITE), folder / "catalogue", today=TODAY
    )
    print(f"catalogue build (raw only): {time.monotonic() - started:.1f} s")
    return build


def test_every_table_and_variable_of_the_references_has_its_page(built):
    schemas = _schemas()
    assert len(schemas) == 188
    pages = built.folder / "dictionary" / "tables"
    assert len(list(pages.glob("*.html"))) == len(schemas)
    for name, schema in schemas.items():
        page = (pages / f"{name}.html").read_text(encoding="utf-8")
        for field in schema["fields"]:
            assert f'<tr id="{field["name"]}">' in page, (name, field["name"])
    er_pha = (pages / "ER_PHA_F.html").read_text(encoding="utf-8")
    # A nomenclature is a link to its codes; the product and the registry's view are shown.
    assert '<a href="../nomenclatures/IR_ORG_V.html">IR_ORG_V</a>' in er_pha
    assert "DCIR" in er_pha and "Registered by the hub" in er_pha
    # Every table of the references is a registered dataset (hdh_pipelines/registry/generate.py).
    assert "Registered by the hub" in (pages / "ER_BIO_F.html").read_text(encoding="utf-8")


def test_nomenclature_pages_list_every_code_and_label(built):
    rows = list(
        csv.reader(
            (SNDS / "synthetic-snds/nomenclatures/ORAVAL/IR_SEX_V.csv").open(encoding="utf-8"), delimiter=";"
        )
    )
    page = (built.folder / "dictionary/nomenclatures/IR_SEX_V.html").read_text(encoding="utf-8")
    assert page.count('<tr class="code">') == len(rows) - 1
    assert all(f"<code>{code}</code></td><td>{label}</td>" in page for code, label, *_ in rows[1:])
    assert "Registered by the hub as a referential" in page
    # A nomenclature the registry holds as a referential links to its record.
    icd10 = (built.folder / "dictionary/nomenclatures/IR_CIM_V.html").read_text(encoding="utf-8")
    assert '<a href="../../datasets/raw__ir_cim_v.html">' in icd10


def test_history_and_statistics_come_from_the_hub_deliveries(built):
    pages = built.folder / "dictionary" / "tables"
    mco = (pages / "T_MCOaaB.html").read_text(encoding="utf-8")
    # Per-year tables: the years of the delivered names (T_MCO23B, T_MCO25B).
    assert "<th>Seen in deliveries to the hub</th><td>2023 to 2025</td>" in mco
    beneficiaries = (pages / "IR_BEN_R.html").read_text(encoding="utf-8")
    # Other tables: the years the deliveries were loaded.
    assert "<th>Seen in deliveries to the hub</th><td>2024 to 2026</td>" in beneficiaries
    assert "<h2>Statistics (hub)</h2>" in beneficiaries and "Distinct individuals" in beneficiaries
    not_held = (pages / "ER_BIO_F.html").read_text(encoding="utf-8")
    assert "not delivered to the hub yet" in not_held and "Statistics (hub)" not in not_held


def _columns(fields: str | list[str]) -> tuple[str, ...]:
    """A Table Schema names one column as a string, several as a list."""
    return (fields,) if isinstance(fields, str) else tuple(fields)


def _independent_comparison() -> dict[tuple[str, str], str]:
    """Pair of tables -> status, from the two references parsed here."""
    dico_data = SNDS / "dico-snds/app/app_data"
    names = {row["index"]: row["name"] for row in csv.DictReader((dico_data / "snds_nodes.csv").open())}
    dico: dict[tuple[str, str], set] = {}
    for row in csv.DictReader((dico_data / "snds_links.csv").open()):
        for part in row["joint_var"].split("|"):
            if part.strip() and part.strip() != "Bidirectionnel":
                left, _, right = part.partition("=>")
                source = tuple(c.strip() for c in left.split("+"))
                target = tuple(c.strip() for c in right.split("+")) if right else source
                dico.setdefault((names[row["source"]], names[row["target"]]), set()).add((source, target))
                if "Bidirectionnel" in row["joint_var"]:
                    dico.setdefault((names[row["target"]], names[row["source"]]), set()).add((target, source))
    schema: dict[tuple[str, str], set] = {}
    for name, document in _schemas().items():
        for fk in document.get("foreignKeys", []):
            pair = (name, fk["reference"]["resource"])
            schema.setdefault(pair, set()).add((_columns(fk["fields"]), _columns(fk["reference"]["fields"])))
    statuses = {}
    for pair, keys in schema.items():
        statuses[pair] = (
            "schema-snds only" if pair not in dico else ("agree" if keys <= dico[pair] else "keys differ")
        )
    return statuses


def test_join_keys_of_the_two_references_are_compared(built):
    published = json.loads((built.folder / "dictionary/join-keys.json").read_text(encoding="utf-8"))
    by_pair = {(row["source"], row["target"]): row["status"] for row in published}
    expected = _independent_comparison()
    assert {pair: by_pair.get(pair) for pair in expected} == expected
    # Every dico-snds link is in the comparison as well.
    assert len(published) >= 191
    assert {"agree"} <= set(by_pair.values())


def test_a_disagreement_between_the_references_is_reported():
    reference = read_snds_reference()
    prs = reference.tables["ER_PHA_F"]
    beneficiaries = reference.tables["IR_BEN_R"]
    changed = {
        # A key column renamed on schema-snds's side: the keys differ.
        "ER_PHA_F": replace(
            prs,
            foreign_keys=tuple(
                replace(fk, source_columns=("DCT_ORD_NUM_X", *fk.source_columns[1:]))
                for fk in prs.foreign_keys
            ),
        ),
        # A foreign key dico-snds does not know.
        "IR_BEN_R": replace(
            beneficiaries,
            foreign_keys=(JoinLink("IR_BEN_R", "ER_BIO_F", ("BEN_NIR_PSA",), ("BEN_NIR_PSA",)),),
        ),
    }
    # And a foreign key dropped on schema-snds's side: dico-snds only.
    dropped = next(t for t in reference.tables.values() if t.foreign_keys and t.name not in changed)
    changed[dropped.name] = replace(dropped, foreign_keys=())
    statuses = {
        (c.source, c.target): c.status
        for c in compare_join_keys(replace(reference, tables={**reference.tables, **changed}))
    }
    assert statuses[("ER_PHA_F", "ER_PRS_F")] == "keys differ"
    assert statuses[("IR_BEN_R", "ER_BIO_F")] == "schema-snds only"
    assert statuses[(dropped.name, dropped.foreign_keys[0].target)] == "dico-snds only"
    assert {c.status for c in compare_join_keys(reference)} == {"agree"}


def test_product_records_group_their_tables_and_link_the_dictionary(built):
    assert built.violations == 0
    dcir = Graph().parse(built.folder / "records" / "snds__dcir.ttl")
    subject = HubIdentity().iri("dataset", "snds/dcir")
    assert (subject, DCTERMS.hasPart, HubIdentity().iri("dataset", "raw/er_prs_f")) in dcir
    assert dcir.value(subject, FOAF.page) == URIRef(f"{SITE}dictionary/index.html#product-DCIR")
    products = {p.name for p in (built.folder / "records").glob("snds__*.ttl")}
    assert len(products) == len(read_snds_reference().products) == 12
    table = Graph().parse(built.folder / "records" / "raw__ir_ben_r.ttl")
    record = HubIdentity().iri("dataset", "raw/ir_ben_r")
    assert table.value(record, FOAF.page) == URIRef(f"{SITE}dictionary/tables/IR_BEN_R.html")
    assert table.value(record, DCAT.landingPage) == URIRef(f"{SITE}datasets/raw__ir_ben_r.html")


def _open(page: DevToolsPage, url: str, ready: str, timeout_seconds: float = 60) -> None:
    """Navigate and wait until the JS expression ``ready`` is true (the page's scripts have run)."""
    page.goto(url)
    page.page.wait_for_function(f"() => !!({ready})", timeout=timeout_seconds * 1000)


# One box per label: the text lines of a node, an edge or a product (cluster), united; measured with the
# whole map at 100 % (1 unit = 1 px), where the browser draws the text at its own size (zoomed out, Chromium
# draws tiny text at a minimum size, which would inflate every box).
_OVERLAPS = """
(function () {
  var svg = document.querySelector('#snds-map svg'), full = svg.dataset.full.split(' ').map(Number);
  svg.setAttribute('viewBox', svg.dataset.full);
  svg.style.width = full[2] + 'px'; svg.style.height = full[3] + 'px';
  var boxes = new Map();
  document.querySelectorAll('#snds-map svg text').forEach(function (t) {
    var b = t.getBBox(), owner = t.closest('g[id]'), box = boxes.get(owner);
    boxes.set(owner, box ? [Math.min(box[0], b.x), Math.min(box[1], b.y), Math.max(box[2], b.x + b.width),
                            Math.max(box[3], b.y + b.height), box[4] + ' ' + t.textContent]
                         : [b.x, b.y, b.x + b.width, b.y + b.height, t.textContent]);
  });
  boxes = Array.from(boxes.values());
  svg.style.width = ''; svg.style.height = '';
  var found = [];
  for (var i = 0; i < boxes.length; i++) {
    for (var j = i + 1; j < boxes.length; j++) {
      var a = boxes[i], b = boxes[j];
      if (a[0] < b[2] - 0.5 && b[0] < a[2] - 0.5 && a[1] < b[3] - 0.5 && b[1] < a[3] - 0.5) {
        found.push(a[4] + ' / ' + b[4]);
      }
    }
  }
  return {labels: boxes.length, overlaps: found.slice(0, 10)};
})()
"""


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install -y chromium")
def test_browser_searches_the_dictionary_and_focuses_a_table_on_the_map(built):
    with chromium_page(CHROMIUM) as page:
        _open(page, (built.folder / "dictionary/index.html").as_uri(), "window.dictionarySearch")
        timings = {}
        for query, kind, expected in (
            ("ER_PRS_F", "tables", "ER_PRS_F"),
            ("PHA_PRS_C13", "variables", "ER_PHA_F.PHA_PRS_C13"),
            ("forfait accouchement", "codes", "IR_ACT_COD: A"),
            ("deces", "nomenclatures", None),  # accents ignored: "décès"
            ("persons", "datasets", "marts/persons"),
        ):
            found = page.evaluate(
                f"window.dictionarySearch({json.dumps(query)}), "
                f"Array.from(document.querySelectorAll('[data-kind={kind}] li')).map(li => li.dataset.name)"
            )
            timings[query] = page.evaluate("window.lastSearchMs")
            assert found, (query, kind)
            if expected:
                assert expected in found, (query, found[:10])
        prepared = page.evaluate("window.searchIndexMs")
        print(f"dictionary search (ms): {timings}; index prepared in {prepared:.0f} ms")
        assert max(timings.values()) < SEARCH_BUDGET_MS, timings

        _open(page, (built.folder / "cartography.html").as_uri() + "?focus=ER_PRS_F", "window.focusTable")
        labels = page.evaluate(_OVERLAPS)
        assert labels["labels"] > 188 and labels["overlaps"] == [], labels
        assert page.evaluate("window.focusedTable") == "ER_PRS_F"
        page.evaluate("window.focusTable('ER_PRS_F')")  # zoom on it again after the measure at 100 %
        focused = page.evaluate(
            "Array.from(document.querySelectorAll('#snds-map g.node.focus')).map(g => g.id.slice(6))"
        )
        assert {"ER_PRS_F", "ER_PHA_F", "IR_BEN_R"} <= set(focused) and len(focused) < 60, focused
        page.screenshot(ARTIFACTS / "cartography-focus-er_prs_f.png")
        page.evaluate("document.getElementById('reset').click()")
        assert page.evaluate("window.focusedTable") is None
        lineage = page.evaluate("Array.from(document.querySelectorAll('#lineage g.node')).map(g => g.id)")
        assert "dataset:raw/ir_ben_r" in lineage
        page.screenshot(ARTIFACTS / "cartography.png")
