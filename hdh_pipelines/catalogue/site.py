"""The human catalogue: a static site (no server, no external resource) with client-side search.

Pages: ``index.html`` (datasets, search across datasets and variables),
``datasets/<slug>.html`` (one per dataset), ``dictionary.html`` (every variable
and every join link of the hub's datasets) and ``algorithms.html`` (the
targeting algorithms' fiches); the SNDS dictionary and the cartography are
written by ``dictionary.py`` and ``cartography.py``. The search
index is embedded in ``index.html`` as JSON; ``index.html?q=WORD`` opens with
that search done, so a link (or a headless browser) can ask for a result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from hdh_pipelines.catalogue.model import (
    DatasetDescription,
    DatasetStatistics,
    JoinLink,
    QualitySummary,
)
from hdh_pipelines.catalogue.nomenclatures import CODING_SYSTEMS
from hdh_pipelines.catalogue.sources import FICHE_PARTS, AlgorithmFiche, algorithm_fiches
from hdh_pipelines.core.disclosure import DISCLOSURE_THRESHOLD

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1d2733}
table{border-collapse:collapse;width:100%;margin:1rem 0}th,td{border:1px solid #ccd;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#eef2f7}code{background:#f3f3f3;padding:0 .2rem}
.suppressed{color:#777}.ok{color:#106b21}.ko{color:#a31515}#search{font-size:1.1rem;width:100%;padding:.4rem}
nav a{margin-right:1rem}
"""
_SEARCH_JS = """
(function () {
  var index = JSON.parse(document.getElementById('search-index').textContent);
  var box = document.getElementById('search');
  var list = document.getElementById('results');
  function run(query) {
    var words = query.toLowerCase().split(/\\s+/).filter(Boolean);
    list.innerHTML = '';
    if (!words.length) { return; }
    index.forEach(function (entry) {
      var matched = entry.variables.filter(function (v) {
        return words.every(function (w) { return v.text.indexOf(w) >= 0; });
      });
      var inDataset = words.every(function (w) { return entry.text.indexOf(w) >= 0; });
      if (!inDataset && !matched.length) { return; }
      var item = document.createElement('li');
      item.className = 'result';
      item.setAttribute('data-dataset', entry.identifier);
      var link = document.createElement('a');
      link.href = entry.page;
      link.textContent = entry.identifier + ' \\u2014 ' + entry.title;
      item.appendChild(link);
      if (matched.length) {
        var note = document.createElement('span');
        note.textContent = ' (variables: ' + matched.map(function (v) { return v.name; }).join(', ') + ')';
        item.appendChild(note);
      }
      list.appendChild(item);
    });
    document.getElementById('count').textContent = list.children.length + ' dataset(s)';
  }
  box.addEventListener('input', function () { run(box.value); });
  var query = new URLSearchParams(window.location.search).get('q');
  if (query) { box.value = query; run(query); }
})();
"""


@dataclass(frozen=True)
class SiteEntry:
    description: DatasetDescription
    statistics: DatasetStatistics
    quality: QualitySummary | None


def page(title: str, body: str, *, root: str = "") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f'<nav><a href="{root}index.html">Catalogue</a><a href="{root}dictionary.html">Dictionary</a>'
        f'<a href="{root}dictionary/index.html">SNDS dictionary</a>'
        f'<a href="{root}cartography.html">Cartography</a>'
        f'<a href="{root}algorithms.html">Algorithms</a>'
        f'<a href="{root}projects.html">Projects</a>'
        f'<a href="{root}catalogue.ttl">Turtle</a><a href="{root}catalogue.jsonld">JSON-LD</a></nav>'
        f"<h1>{escape(title)}</h1>{body}</body></html>\n"
    )


def _count(value: int | None, suppressed: bool) -> str:
    if value is not None:
        return f"{value:,}".replace(",", " ")
    return f'<span class="suppressed">&lt; {DISCLOSURE_THRESHOLD} (suppressed)</span>' if suppressed else "—"


def statistics_rows(stats: DatasetStatistics) -> str:
    coverage = (
        f"{stats.coverage_start:%Y-%m} to {stats.coverage_end:%Y-%m}"
        if stats.coverage_start and stats.coverage_end
        else "—"
    )
    ages = (
        f"{stats.min_typical_age} to {stats.max_typical_age}"
        if stats.min_typical_age is not None and stats.max_typical_age is not None
        else "—"
    )
    rows = [
        ("Records", _count(stats.records, stats.records_suppressed)),
        ("Distinct individuals", _count(stats.individuals, stats.individuals_suppressed)),
        (f"Temporal coverage (months with at least {DISCLOSURE_THRESHOLD} records)", escape(coverage)),
        ("Typical ages", escape(ages)),
    ]
    return "".join(f"<tr><th>{label}</th><td>{value}</td></tr>" for label, value in rows)


def _link_label(link: JoinLink) -> str:
    if link.source_columns == link.target_columns:
        return " + ".join(link.source_columns)
    return " + ".join(f"{s} => {t}" for s, t in zip(link.source_columns, link.target_columns, strict=True))


def _licence_section(description: DatasetDescription) -> str:
    if description.licence is None:
        return ""
    licence = description.licence
    files = ", ".join(f"<code>{escape(f.file)}</code> ({escape(f.media_type)})" for f in description.files)
    return (
        f'<h2>Open data</h2><p>Licence: <a href="{escape(licence.page)}">{escape(licence.title)}</a> '
        f"(<code>{escape(licence.identifier)}</code>). Files: {files or '—'}.</p>"
    )


def _dataset_page(
    entry: SiteEntry, downstream: Sequence[str], known: Mapping[str, DatasetDescription]
) -> str:
    description, stats = entry.description, entry.statistics

    def ref(identifier: str) -> str:
        if identifier in known:
            return f'<a href="{known[identifier].slug}.html">{escape(identifier)}</a>'
        return escape(identifier)

    quality = (
        f'<p class="{"ok" if entry.quality.failed == 0 else "ko"}">{escape(entry.quality.sentence)}</p>'
        if entry.quality
        else "<p>No quality result recorded yet.</p>"
    )
    links = "".join(
        f"<tr><td>{ref(link.source)}</td><td>{ref(link.target)}</td><td><code>{escape(_link_label(link))}</code></td></tr>"
        for link in description.links
    )
    variables = "".join(
        f"<tr><td><code>{escape(v.name)}</code></td><td>{escape(v.type)}</td><td>{escape(v.description)}</td>"
        f"<td>{escape(v.nomenclature or '')}"
        f"{' (' + escape(CODING_SYSTEMS[v.coding_system][1]) + ')' if v.coding_system else ''}</td></tr>"
        for v in description.variables
    )
    deliveries = ", ".join(escape(f"{d.provider}/{d.delivery_id}") for d in stats.deliveries)
    body = (
        f"<p><code>{escape(description.identifier)}</code> · {escape(description.layer.value)} · "
        f"{escape(description.family)} · access: {escape(description.access.value)}</p>"
        f"<p>{escape(description.description)}</p>"
        + _licence_section(description)
        + f"<h2>Statistics</h2><table>{statistics_rows(stats)}</table>"
        f"<h2>Quality</h2>{quality}"
        f"<h2>Lineage</h2><p>Derived from: {', '.join(ref(i) for i in description.derived_from) or '—'}</p>"
        f"<p>Used by: {', '.join(ref(i) for i in downstream) or '—'}</p>"
        + (f"<p>Deliveries: {deliveries}</p>" if deliveries else "")
        + f"<h2>Keys</h2><p>Primary key: <code>{escape(', '.join(description.primary_key) or '—')}</code>; "
        f"person: <code>{escape(', '.join(description.person_columns) or '—')}</code></p>"
        f"<h2>Join links</h2><table><tr><th>From</th><th>To</th><th>Keys</th></tr>{links}</table>"
        f'<h2>Variables</h2><table id="variables"><tr><th>Name</th><th>Type</th><th>Description</th>'
        f"<th>Nomenclature</th></tr>{variables}</table>"
        f'<p>Record: <a href="../records/{description.slug}.ttl">Turtle</a>, '
        f'<a href="../records/{description.slug}.jsonld">JSON-LD</a></p>'
    )
    return page(description.title, body, root="../")


def _search_index(entries: Sequence[SiteEntry]) -> str:
    index = []
    for entry in entries:
        d = entry.description
        index.append(
            {
                "identifier": d.identifier,
                "title": d.title,
                "page": f"datasets/{d.slug}.html",
                "text": " ".join([d.identifier, d.name, d.title, d.description, *d.keywords]).lower(),
                "variables": [
                    {"name": v.name, "text": f"{v.name} {v.description} {v.nomenclature or ''}".lower()}
                    for v in d.variables
                ],
            }
        )
    # "</" would end the <script> element early.
    return json.dumps(index, ensure_ascii=False).replace("</", "<\\/")


def _index_page(entries: Sequence[SiteEntry], validation: str) -> str:
    rows = "".join(
        f'<tr><td><a href="datasets/{e.description.slug}.html">{escape(e.description.identifier)}</a></td>'
        f"<td>{escape(e.description.title)}</td><td>{escape(e.description.layer.value)}</td>"
        f"<td>{_count(e.statistics.records, e.statistics.records_suppressed)}</td>"
        f"<td>{_count(e.statistics.individuals, e.statistics.individuals_suppressed)}</td></tr>"
        for e in entries
    )
    body = (
        "<p>Search datasets and variables (name, description, nomenclature):</p>"
        '<input id="search" type="search" placeholder="e.g. BEN_NAI_ANN, diagnostic, ATC" autofocus>'
        '<p id="count"></p><ul id="results"></ul>'
        f"<p>{escape(validation)}</p>"
        "<h2>Datasets</h2><table><tr><th>Dataset</th><th>Title</th><th>Layer</th><th>Records</th>"
        f"<th>Individuals</th></tr>{rows}</table>"
        '<p>The SNDS itself, every table of it: <a href="dictionary/index.html">dictionary</a> and '
        '<a href="cartography.html">cartography</a> (with the hub\'s lineage).</p>'
        f'<script id="search-index" type="application/json">{_search_index(entries)}</script>'
        f"<script>{_SEARCH_JS}</script>"
    )
    return page("Health Data Hub catalogue", body)


def _dictionary_page(entries: Sequence[SiteEntry]) -> str:
    rows = "".join(
        f'<tr><td><a href="datasets/{e.description.slug}.html">{escape(e.description.identifier)}</a></td>'
        f"<td><code>{escape(v.name)}</code></td><td>{escape(v.type)}</td><td>{escape(v.description)}</td>"
        f"<td>{escape(v.nomenclature or '')}</td></tr>"
        for e in entries
        for v in e.description.variables
    )
    links = "".join(
        f"<tr><td>{escape(link.source)}</td><td>{escape(link.target)}</td><td><code>{escape(_link_label(link))}</code></td></tr>"
        for e in entries
        for link in e.description.links
    )
    body = (
        '<h2>Join links</h2><table id="links"><tr><th>From</th><th>To</th><th>Keys</th></tr>'
        f"{links}</table><h2>Variables</h2><table><tr><th>Dataset</th><th>Variable</th><th>Type</th>"
        f"<th>Description</th><th>Nomenclature</th></tr>{rows}</table>"
    )
    return page("Data dictionary", body)


def _algorithms_page(fiches: Sequence[AlgorithmFiche]) -> str:
    """One section per targeting algorithm: its fiche (definition, data and codes, source, limits)."""
    sections = "".join(
        f'<section id="{escape(fiche.name)}"><h2>{escape(fiche.name)} <small>version {escape(fiche.version)}'
        f"</small></h2><p>{escape(fiche.description)}</p><table>"
        + "".join(
            f"<tr><th>{escape(part)}</th><td>{escape(fiche.parts[part])}</td></tr>" for part in FICHE_PARTS
        )
        + f"<tr><th>reference</th><td>{escape(fiche.reference)}</td></tr></table></section>"
        for fiche in fiches
    )
    body = (
        "<p>Cohort-targeting algorithms (warehouse schema <code>algorithms</code>): one row per person and "
        "year. Each follows its published definition; the fiche says which and what it leaves out.</p>"
        + sections
    )
    return page("Targeting algorithms", body)


def directory_page(projects: Sequence[Mapping[str, object]]) -> str:
    """The public directory of projects (rows of hdh_pipelines.rights.directory), one table row each."""
    rows = "".join(
        f'<tr data-project="{escape(str(p["project"]))}"><td>{escape(str(p["title"]))}</td>'
        f"<td>{escape(str(p['controller']))}<br><small>{escape(str(p['dpo']))}</small></td>"
        f"<td>{escape(str(p['purpose']))}</td><td>{escape(str(p['datasets']))}</td>"
        f"<td>{escape(str(p['route']))}<br><small>{escape(str(p['references']))}</small></td>"
        f"<td>{escape(str(p['study_start']))} to {escape(str(p['study_end']))}; until "
        f"{escape(str(p['expires_on']))}</td><td>{escape(str(p['status']))}</td>"
        f"<td>{escape(str(p['results'])) or '—'}</td></tr>"
        for p in projects
    )
    body = (
        "<p>Every project using the hub's data, from the project registry. Also as open data: "
        '<a href="datasets/open_data__project_directory.html">dataset page</a>.</p>'
        "<table><tr><th>Project</th><th>Controller</th><th>Purpose</th><th>Datasets</th><th>Route</th>"
        f"<th>Dates</th><th>Status</th><th>Results</th></tr>{rows}</table>"
    )
    return page("Directory of projects", body)


def write_site(
    folder: Path,
    entries: Sequence[SiteEntry],
    validation: str,
    directory: Sequence[Mapping[str, object]] | None = None,
) -> None:
    """Write the site's pages into ``folder`` (which the caller publishes atomically)."""
    known = {e.description.identifier: e.description for e in entries}
    (folder / "datasets").mkdir(parents=True, exist_ok=True)
    for entry in entries:
        downstream = sorted(
            e.description.identifier
            for e in entries
            if entry.description.identifier in e.description.derived_from
        )
        (folder / "datasets" / f"{entry.description.slug}.html").write_text(
            _dataset_page(entry, downstream, known), encoding="utf-8"
        )
    (folder / "index.html").write_text(_index_page(entries, validation), encoding="utf-8")
    (folder / "dictionary.html").write_text(_dictionary_page(entries), encoding="utf-8")
    (folder / "algorithms.html").write_text(_algorithms_page(algorithm_fiches()), encoding="utf-8")
    if directory is not None:
        (folder / "projects.html").write_text(directory_page(directory), encoding="utf-8")
