"""The SNDS dictionary: every table, variable, nomenclature and join key of the SNDS, with what the hub holds.

Written into ``dictionary/`` of the catalogue site (see docs/catalogue.md):
``index.html`` (search, products and their tables, join keys and where the two
references disagree), ``tables/<TABLE>.html``, ``nomenclatures/<NAME>.html``
(codes and labels), ``search-index.js`` and ``join-keys.json``. Tables come
from the SNDS reference (``snds_reference``), so all of them are documented
whether the registry holds them or not; the hub's own facts (registered,
delivered years, statistics held to the suppression threshold) are added where
it has them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from html import escape
from pathlib import Path

from hdh_pipelines.catalogue.model import DatasetDescription, DatasetStatistics, JoinLink, Layer, Variable
from hdh_pipelines.catalogue.shacl import AccessLevel
from hdh_pipelines.catalogue.site import page, statistics_rows
from hdh_pipelines.catalogue.snds_reference import DicoLink, SndsReference

# Nomenclatures longer than this are browsable on their page but their codes are not in the search
# index: the three above it (organisations, dates, communes) would triple the index for little use.
SEARCH_CODES_LIMIT = 20_000
DICTIONARY_DIR = "dictionary"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class HubTable:
    """What the hub itself knows of an SNDS table: its catalogue page, delivered years and statistics."""

    dataset_page: str | None  # relative to the site root; None when the registry does not hold the table
    years: tuple[int, ...]
    statistics: DatasetStatistics | None  # None when no delivery of it is held


@dataclass(frozen=True)
class KeyComparison:
    """One pair of tables joined by at least one reference, and whether the two references agree."""

    source: str
    target: str
    schema_snds: tuple[str, ...]  # key labels of the foreign keys of schema-snds
    dico_snds: tuple[str, ...]  # key labels of the alternatives of dico-snds's link
    status: str  # agree, keys differ, schema-snds only, dico-snds only


def key_label(source_columns: Sequence[str], target_columns: Sequence[str]) -> str:
    if tuple(source_columns) == tuple(target_columns):
        return " + ".join(source_columns)
    return " + ".join(source_columns) + " => " + " + ".join(target_columns)


def _dico_pairs(links: Sequence[DicoLink]) -> dict[tuple[str, str], set[tuple]]:
    pairs: dict[tuple[str, str], set[tuple]] = {}
    for link in links:
        for source_columns, target_columns in link.alternatives:
            pairs.setdefault((link.source, link.target), set()).add((source_columns, target_columns))
    return pairs


def compare_join_keys(reference: SndsReference) -> list[KeyComparison]:
    """The join keys of schema-snds (foreign keys) against dico-snds (links), pair of tables by pair.

    A bidirectional dico-snds link also stands for its reverse; a foreign key agrees when one of
    the link's alternatives names the same columns in the same order.
    """
    dico = _dico_pairs(reference.dico_links)
    reverse: dict[tuple[str, str], set[tuple]] = {}
    for link in reference.dico_links:
        if link.bidirectional:
            for source_columns, target_columns in link.alternatives:
                reverse.setdefault((link.target, link.source), set()).add((target_columns, source_columns))
    schema: dict[tuple[str, str], set[tuple]] = {}
    for table in reference.tables.values():
        for fk in table.foreign_keys:
            schema.setdefault((fk.source, fk.target), set()).add((fk.source_columns, fk.target_columns))
    comparisons = []
    for pair in sorted(set(schema) | set(dico)):
        ours, theirs = schema.get(pair, set()), dico.get(pair, set()) | reverse.get(pair, set())
        # What dico-snds says of this pair: its own link, else the reverse of a bidirectional one.
        shown = dico[pair] if pair in dico else reverse.get(pair, set())
        if ours and theirs:
            status = "agree" if ours <= theirs else "keys differ"
        elif ours:
            status = "schema-snds only"
        else:
            status = "dico-snds only"
        if status == "dico-snds only" and pair not in dico:
            continue  # the reverse of a bidirectional link, not a link of its own
        comparisons.append(
            KeyComparison(
                pair[0],
                pair[1],
                tuple(sorted(key_label(*keys) for keys in ours)),
                tuple(sorted(key_label(*keys) for keys in shown)),
                status,
            )
        )
    return comparisons


def join_links(reference: SndsReference) -> list[JoinLink]:
    """Every join key the references give, once: schema-snds's foreign keys, then dico-snds's other links."""
    links = {
        (fk.source, fk.target, fk.source_columns, fk.target_columns): fk
        for table in reference.tables.values()
        for fk in table.foreign_keys
    }
    for link in reference.dico_links:
        for source_columns, target_columns in link.alternatives:
            links.setdefault(
                (link.source, link.target, source_columns, target_columns),
                JoinLink(link.source, link.target, source_columns, target_columns),
            )
    return [links[key] for key in sorted(links)]


def page_name(name: str) -> str:
    """File name (without suffix) of a table's or nomenclature's page."""
    return _SAFE_NAME.sub("_", name)


def _table_href(name: str, reference: SndsReference, prefix: str) -> str:
    if name in reference.tables:
        return f'<a href="{prefix}{page_name(name)}.html">{escape(name)}</a>'
    return escape(name)


def _years(years: Sequence[int]) -> str:
    return f"{min(years)} to {max(years)}" if years else "not delivered to the hub yet"


def _table_page(
    name: str,
    reference: SndsReference,
    hub: HubTable | None,
    links: Sequence[JoinLink],
) -> str:
    table = reference.tables[name]
    held = (
        f'<p class="held">Registered by the hub: <a href="../../{hub.dataset_page}">catalogue record and '
        "statistics</a>.</p>"
        if hub and hub.dataset_page
        else '<p class="not-held">Not registered by the hub yet: documented from the references only.</p>'
    )
    statistics = (
        f"<h2>Statistics (hub)</h2><table>{statistics_rows(hub.statistics)}</table>"
        if hub and hub.statistics is not None
        else ""
    )
    history = (
        f"<tr><th>In the SNDS (schema-snds)</th><td>{escape(table.created or '—')} to "
        f"{escape(table.deleted or 'today')}</td></tr>"
        f"<tr><th>Seen in deliveries to the hub</th><td>{escape(_years(hub.years if hub else ()))}</td></tr>"
    )
    keys = "".join(
        f"<tr><td>{_table_href(link.source, reference, '')}</td>"
        f"<td>{_table_href(link.target, reference, '')}</td>"
        f"<td><code>{escape(key_label(link.source_columns, link.target_columns))}</code></td></tr>"
        for link in links
        if name in (link.source, link.target)
    )
    variables = "".join(
        f'<tr id="{escape(v.name)}"><td><code>{escape(v.name)}</code></td><td>{escape(v.type)}</td>'
        f"<td>{escape(v.description)}</td><td>"
        + (
            f'<a href="../nomenclatures/{page_name(v.nomenclature)}.html">{escape(v.nomenclature)}</a>'
            if v.nomenclature in reference.nomenclatures
            else escape(v.nomenclature or "")
        )
        + f"</td><td>{escape(v.created)}</td><td>{escape(v.deleted)}</td></tr>"
        for v in table.variables
    )
    body = (
        f"<p><code>{escape(table.name)}</code> · product "
        f'<a href="../index.html#product-{page_name(table.product)}">{escape(table.product)}</a></p>'
        f"{held}<h2>History</h2><table>{history}</table>{statistics}"
        f"<h2>Keys</h2><p>Primary key: <code>{escape(', '.join(table.primary_key) or '—')}</code></p>"
        f'<table id="join-keys"><tr><th>From</th><th>To</th><th>Keys</th></tr>{keys}</table>'
        f'<p><a href="../../cartography.html?focus={escape(table.name)}">On the map</a></p>'
        f'<h2>Variables</h2><table id="variables"><tr><th>Name</th><th>Type</th><th>Description</th>'
        f"<th>Nomenclature</th><th>Since</th><th>Until</th></tr>{variables}</table>"
    )
    return page(f"{table.name} — {table.title}", body, root="../../")


_FILTER_JS = """
(function () {
  var box = document.getElementById('filter');
  var rows = document.querySelectorAll('#codes tr.code');
  box.addEventListener('input', function () {
    var q = box.value.toLowerCase();
    rows.forEach(function (row) { row.hidden = q && row.textContent.toLowerCase().indexOf(q) < 0; });
  });
})();
"""


def _nomenclature_page(
    name: str,
    reference: SndsReference,
    codes: Sequence[tuple[str, str]],
    used_by: Sequence[tuple[str, str]],
    hub_page: str | None,
) -> str:
    nomenclature = reference.nomenclatures[name]
    rows = "".join(
        f'<tr class="code"><td><code>{escape(code)}</code></td><td>{escape(label)}</td></tr>'
        for code, label in codes
    )
    users = ", ".join(
        f'<a href="../tables/{page_name(table)}.html#{escape(column)}">{escape(table)}.{escape(column)}</a>'
        for table, column in used_by
    )
    body = (
        f"<p><code>{escape(name)}</code> · published by {escape(nomenclature.source)}</p>"
        f"<p>{escape(nomenclature.description)}</p><p>Used by: {users or '—'}</p>"
        + (
            f'<p class="held">Registered by the hub as a referential: <a href="../../{hub_page}">catalogue '
            "record</a>.</p>"
            if hub_page
            else ""
        )
        + '<input id="filter" type="search" placeholder="Filter codes and labels">'
        f'<table id="codes"><tr><th>Code</th><th>Label</th></tr>{rows}</table><script>{_FILTER_JS}</script>'
    )
    return page(f"{name} — {nomenclature.title}", body, root="../../")


def search_index(
    reference: SndsReference,
    codes_of: Mapping[str, Sequence[tuple[str, str]]],
    hub_tables: Mapping[str, HubTable],
    datasets: Sequence[tuple[str, str, str, str]],
) -> dict:
    """The client-side index: SNDS tables, their variables, nomenclatures and codes, the hub's datasets.

    Compact rows (lists, not objects) so that the browser parses it fast; pages are relative to
    ``dictionary/``. ``datasets`` are the hub's catalogue entries (identifier, title, description,
    page), which carry the English descriptions of the marts and OMOP tables.
    """
    tables = sorted(reference.tables.values(), key=lambda t: t.name)
    position = {table.name: i for i, table in enumerate(tables)}
    nomenclatures = sorted(reference.nomenclatures.values(), key=lambda n: n.name)
    codes = []
    for i, nomenclature in enumerate(nomenclatures):
        rows = codes_of[nomenclature.name]
        if len(rows) <= SEARCH_CODES_LIMIT:
            codes.extend([i, code, label] for code, label in rows)
    return {
        "tables": [
            [t.name, t.product, t.title, f"tables/{page_name(t.name)}.html", int(t.name in hub_tables)]
            for t in tables
        ],
        "variables": [
            [position[t.name], v.name, v.description, v.nomenclature or ""]
            for t in tables
            for v in t.variables
        ],
        "nomenclatures": [
            [n.name, n.title, f"nomenclatures/{page_name(n.name)}.html"] for n in nomenclatures
        ],
        "codes": codes,
        "datasets": [list(d) for d in datasets],
    }


_SEARCH_JS = """
(function () {
  var index = window.SNDS_SEARCH_INDEX;
  function fold(text) { return text.normalize('NFD').replace(/[\\u0300-\\u036f]/g, '').toLowerCase(); }
  var t0 = performance.now();
  // Each kind's texts joined into one string: the first word is found by the browser's native indexOf
  // over it (fast on the ~100,000 codes), the other words are checked on the few entries it hits.
  function prepare(rows, text) {
    var texts = rows.map(function (r) { return fold(text(r)).replace(/\\n/g, ' '); });
    var starts = [], at = 0;
    texts.forEach(function (t) { starts.push(at); at += t.length + 1; });
    return {texts: texts, starts: starts, joined: texts.join('\\n')};
  }
  var kinds = {
    tables: prepare(index.tables, function (r) { return r[0] + ' ' + r[1] + ' ' + r[2]; }),
    variables: prepare(index.variables, function (r) { return r[1] + ' ' + r[2] + ' ' + r[3]; }),
    nomenclatures: prepare(index.nomenclatures, function (r) { return r[0] + ' ' + r[1]; }),
    codes: prepare(index.codes, function (r) { return r[1] + ' ' + r[2]; }),
    datasets: prepare(index.datasets, function (r) { return r[0] + ' ' + r[1] + ' ' + r[2]; })
  };
  window.searchIndexMs = performance.now() - t0;
  var SHOWN = 50;
  var box = document.getElementById('search');
  var out = document.getElementById('results');
  function entryAt(kind, position) {
    var starts = kind.starts, low = 0, high = starts.length - 1;
    while (low < high) {
      var middle = (low + high + 1) >> 1;
      if (starts[middle] <= position) { low = middle; } else { high = middle - 1; }
    }
    return low;
  }
  function matches(name, words) {
    var kind = kinds[name], found = [], last = -1, position = kind.joined.indexOf(words[0]);
    while (position >= 0) {
      var i = entryAt(kind, position);
      if (i !== last) {
        last = i;
        var ok = true;
        for (var j = 1; j < words.length && ok; j++) { ok = kind.texts[i].indexOf(words[j]) >= 0; }
        if (ok) { found.push(i); }
      }
      position = kind.joined.indexOf(words[0], kind.starts[i] + kind.texts[i].length);
    }
    return found;
  }
  function section(title, kind, found, render) {
    if (!found.length) { return; }
    var h = document.createElement('h3');
    h.textContent = title + ' (' + found.length + ')';
    out.appendChild(h);
    var list = document.createElement('ul');
    list.setAttribute('data-kind', kind);
    found.slice(0, SHOWN).forEach(function (i) {
      var item = document.createElement('li');
      item.className = 'result';
      var parts = render(i);
      var link = document.createElement('a');
      link.href = parts[0];
      link.textContent = parts[1];
      item.setAttribute('data-name', parts[1]);
      item.appendChild(link);
      if (parts[2]) { item.appendChild(document.createTextNode(' \\u2014 ' + parts[2])); }
      list.appendChild(item);
    });
    out.appendChild(list);
  }
  function run(query) {
    var t = performance.now();
    var words = fold(query).split(/\\s+/).filter(Boolean);
    out.innerHTML = '';
    if (!words.length) { return; }
    var T = index.tables, V = index.variables, N = index.nomenclatures, C = index.codes, D = index.datasets;
    section('Tables', 'tables', matches('tables', words), function (i) {
      return [T[i][3], T[i][0], T[i][2] + (T[i][4] ? ' (held by the hub)' : '')];
    });
    section('Variables', 'variables', matches('variables', words), function (i) {
      var table = T[V[i][0]];
      return [table[3] + '#' + V[i][1], table[0] + '.' + V[i][1], V[i][2]];
    });
    section('Nomenclatures', 'nomenclatures', matches('nomenclatures', words), function (i) {
      return [N[i][2], N[i][0], N[i][1]];
    });
    section('Codes', 'codes', matches('codes', words), function (i) {
      var n = N[C[i][0]];
      return [n[2], n[0] + ': ' + C[i][1], C[i][2]];
    });
    section('Hub datasets', 'datasets', matches('datasets', words), function (i) {
      return [D[i][3], D[i][0], D[i][1]];
    });
    window.lastSearchMs = performance.now() - t;
    document.getElementById('count').textContent =
      out.querySelectorAll('li.result').length + ' shown, in ' + window.lastSearchMs.toFixed(1) + ' ms';
  }
  window.dictionarySearch = run;
  box.addEventListener('input', function () { run(box.value); });
  var query = new URLSearchParams(window.location.search).get('q');
  if (query) { box.value = query; run(query); }
})();
"""


def _index_page(
    reference: SndsReference, hub_tables: Mapping[str, HubTable], comparisons: Sequence[KeyComparison]
) -> str:
    products = "".join(
        f'<h3 id="product-{page_name(product)}">{escape(product)} ({len(names)} tables)</h3>'
        '<ul class="tables">'
        + "".join(
            f'<li><a href="tables/{page_name(name)}.html">{escape(name)}</a> — '
            f"{escape(reference.tables[name].title)}"
            f"{' <strong>(held by the hub)</strong>' if name in hub_tables else ''}</li>"
            for name in names
        )
        + "</ul>"
        for product, names in reference.products.items()
    )
    disagreements = [c for c in comparisons if c.status != "agree"]
    rows = "".join(
        f'<tr data-status="{escape(c.status)}"><td>{_table_href(c.source, reference, "tables/")}</td>'
        f"<td>{_table_href(c.target, reference, 'tables/')}</td>"
        f"<td><code>{escape(' | '.join(c.schema_snds) or '—')}</code></td>"
        f"<td><code>{escape(' | '.join(c.dico_snds) or '—')}</code></td><td>{escape(c.status)}</td></tr>"
        for c in disagreements
    )
    body = (
        f"<p>The {len(reference.tables)} tables of the SNDS main database, their variables and "
        f"{len(reference.nomenclatures)} nomenclatures, from the Health Data Hub's schema-snds, dico-snds "
        "and synthetic-snds (MPL-2.0 and Licence Ouverte 2.0, read at build time). Descriptions are in "
        "French, as in the references; search ignores accents and case. "
        '<a href="../cartography.html">Cartography</a>.</p>'
        '<input id="search" type="search" autofocus '
        'placeholder="Table, variable, nomenclature, code or label">'
        '<p id="count"></p><div id="results"></div>'
        f"<h2>Products</h2>{products}"
        f"<h2>Join keys where the references disagree</h2><p>{len(comparisons)} pairs of joined tables; "
        f"{len(comparisons) - len(disagreements)} agree. All of them: "
        '<a href="join-keys.json">join-keys.json</a>.</p>'
        '<table id="key-disagreements"><tr><th>From</th><th>To</th><th>schema-snds</th><th>dico-snds</th>'
        f"<th>Status</th></tr>{rows}</table>"
        '<script src="search-index.js"></script>'
        f"<script>{_SEARCH_JS}</script>"
    )
    return page("SNDS dictionary", body, root="../")


def write_dictionary(
    folder: Path,
    reference: SndsReference,
    hub_tables: Mapping[str, HubTable],
    datasets: Sequence[tuple[str, str, str, str]],
    referentials: Mapping[str, str],
) -> list[KeyComparison]:
    """Write the dictionary into ``folder`` (inside the site being staged); returns the key comparison.

    ``referentials`` maps the nomenclatures the registry holds as referentials to their dataset page.
    """
    (folder / "tables").mkdir(parents=True, exist_ok=True)
    (folder / "nomenclatures").mkdir(parents=True, exist_ok=True)
    links = join_links(reference)
    comparisons = compare_join_keys(reference)
    for name in reference.tables:
        (folder / "tables" / f"{page_name(name)}.html").write_text(
            _table_page(name, reference, hub_tables.get(name), links), encoding="utf-8"
        )
    used_by: dict[str, list[tuple[str, str]]] = {}
    for table in reference.tables.values():
        for variable in table.variables:
            if variable.nomenclature:
                used_by.setdefault(variable.nomenclature, []).append((table.name, variable.name))
    codes_of = {name: list(nomenclature.rows()) for name, nomenclature in reference.nomenclatures.items()}
    for name in reference.nomenclatures:
        (folder / "nomenclatures" / f"{page_name(name)}.html").write_text(
            _nomenclature_page(
                name, reference, codes_of[name], used_by.get(name, []), referentials.get(name)
            ),
            encoding="utf-8",
        )
    index = json.dumps(
        search_index(reference, codes_of, hub_tables, datasets), ensure_ascii=False, separators=(",", ":")
    )
    # One assignment around the JSON, so that the page can load it from the file system (no fetch on file://).
    (folder / "search-index.js").write_text(f"window.SNDS_SEARCH_INDEX = {index};\n", encoding="utf-8")
    (folder / "join-keys.json").write_text(
        json.dumps([asdict(c) for c in comparisons], ensure_ascii=False, indent=1), encoding="utf-8"
    )
    (folder / "index.html").write_text(_index_page(reference, hub_tables, comparisons), encoding="utf-8")
    return comparisons


def table_page(name: str) -> str:
    """A table's dictionary page, relative to the site root."""
    return f"{DICTIONARY_DIR}/tables/{page_name(name)}.html"


def product_descriptions(reference: SndsReference, registered: Mapping[str, str]) -> list[DatasetDescription]:
    """One catalogue description per SNDS product; ``registered`` maps table name -> catalogue identifier.

    The product groups its registered tables (``dct:hasPart``); all of its tables are listed in its
    description and documented in the dictionary, registered or not.
    """
    descriptions = []
    for product, names in reference.products.items():
        held = tuple(registered[name] for name in names if name in registered)
        tables = [reference.tables[name] for name in names]
        keys = {c for t in tables for c in t.primary_key} | {
            c for t in tables for fk in t.foreign_keys for c in fk.source_columns
        }
        if not keys:  # no declared key: the columns its tables share are how they are joined
            seen = Counter(v.name for t in tables for v in t.variables)
            keys = {name for name, count in seen.items() if count > 1} or set(seen)
        # The variables of a product record: the columns that tie its tables together. Each table's own
        # record (a registered table family) or dictionary page has the rest.
        variables: dict[str, Variable] = {}
        for table in tables:
            for v in table.variables:
                if v.name in keys and v.name not in variables:
                    variables[v.name] = Variable(v.name, v.type, v.description, v.nomenclature)
        descriptions.append(
            DatasetDescription(
                identifier=f"snds/{page_name(product).lower()}",
                name=product,
                title=f"SNDS : produit {product}",
                description=(
                    f"The {product} product of the SNDS main database: {len(names)} tables "
                    f"({', '.join(names)}), {len(held)} of them registered by the hub."
                ),
                layer=Layer.RAW,
                family="SNDS",
                variables=tuple(variables[name] for name in sorted(variables)),
                access=AccessLevel.NON_PUBLIC,
                keywords=("SNDS", "product", product),
                parts=held,
                documentation=f"{DICTIONARY_DIR}/index.html#product-{page_name(product)}",
            )
        )
    return descriptions
