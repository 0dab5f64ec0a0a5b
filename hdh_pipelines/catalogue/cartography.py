"""The cartography: an interactive map of the SNDS, and the hub's own lineage beside it.

Both graphs are laid out by Graphviz ``dot`` (the OS package, run as a
subprocess): products are clusters, tables are nodes, join keys are labelled
edges; ``dot`` places edge labels as nodes of their own, so no two labels
overlap. Labels use DejaVu Sans, which dot measures through Pango and the
browser renders with the same metrics. ``cartography.html`` holds both SVGs
inline with a little vanilla JS: wheel to zoom, drag to pan, click (or
``?focus=TABLE``) to focus a table and its neighbours.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from html import escape

from hdh_pipelines.catalogue.dictionary import key_label
from hdh_pipelines.catalogue.model import DatasetDescription, JoinLink, Layer
from hdh_pipelines.catalogue.site import page
from hdh_pipelines.catalogue.snds_reference import SndsReference

DOT = "dot"
# Graphviz's own fix for wide star graphs: spreads the many leaf tables of a product over a few ranks.
UNFLATTEN = ("unflatten", "-l", "5", "-f", "-c", "5")
FONT = "DejaVu Sans"
# Keys of more columns than this are labelled by their size; the full key is in the edge's tooltip.
LABELLED_KEY_COLUMNS = 2
DOT_TIMEOUT_SECONDS = 120


class GraphvizMissing(FileNotFoundError):
    """Graphviz ``dot`` is not installed; ``reason`` is machine-readable."""

    reason = "graphviz_missing"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attributes(**values: str) -> str:
    return "[" + ", ".join(f"{key}={_quote(value)}" for key, value in values.items()) + "]"


def _edge_label(link: JoinLink) -> str:
    if len(link.source_columns) <= LABELLED_KEY_COLUMNS:
        return key_label(link.source_columns, link.target_columns).replace(" + ", " +\n")
    return f"{len(link.source_columns)}-column key\n{link.source_columns[0]} + …"


def _header(name: str) -> list[str]:
    return [
        f"digraph {_quote(name)} {{",
        f'graph [rankdir=LR, fontname="{FONT}", fontsize=14, nodesep=0.2, ranksep=0.5, '
        'pad=0.3, outputorder="edgesfirst"];',
        f'node [shape=box, style="rounded,filled", fillcolor="#eef2f7", color="#1d2733", fontname="{FONT}", '
        "fontsize=10, margin=0.08];",
        f'edge [color="#4a6fa5", fontcolor="#2c4a78", fontname="{FONT}", fontsize=8, arrowsize=0.6];',
    ]


def snds_dot(reference: SndsReference, links: Sequence[JoinLink], held: set[str]) -> str:
    """The SNDS map in the dot language: one cluster per product, one edge per join key."""
    lines = _header("snds")
    for index, (product, names) in enumerate(reference.products.items()):
        lines.append(f"subgraph {_quote(f'cluster_{index}')} {{")
        lines.append(
            f'label={_quote(product)}; id={_quote("product:" + product)}; style="rounded,filled"; '
            'fillcolor="#f7f9fc"; color="#9aa9bd";'
        )
        for name in names:
            fill = "#d9ead3" if name in held else "#eef2f7"
            lines.append(
                f"{_quote(name)} "
                + _attributes(id=f"table:{name}", tooltip=reference.tables[name].title, fillcolor=fill)
                + ";"
            )
        lines.append("}")
    for number, link in enumerate(links):
        lines.append(
            f"{_quote(link.source)} -> {_quote(link.target)} "
            + _attributes(
                id=f"join:{number}",
                label=_edge_label(link),
                tooltip=key_label(link.source_columns, link.target_columns),
            )
            + ";"
        )
    lines.append("}")
    return "\n".join(lines)


def lineage_dot(descriptions: Sequence[DatasetDescription]) -> str:
    """The hub's lineage in the dot language: raw → marts → OMOP → open data, one cluster per layer."""
    lines = _header("lineage")
    known = {d.identifier for d in descriptions}
    for layer in Layer:
        members = [d for d in descriptions if d.layer is layer]
        if not members:
            continue
        lines.append(f"subgraph {_quote('cluster_' + layer.value)} {{")
        lines.append(
            f'label={_quote(layer.value)}; id={_quote("layer:" + layer.value)}; style="rounded,filled"; '
            'fillcolor="#f7f9fc"; color="#9aa9bd";'
        )
        for d in members:
            lines.append(
                f"{_quote(d.identifier)} " + _attributes(id=f"dataset:{d.identifier}", tooltip=d.title) + ";"
            )
        lines.append("}")
    for d in descriptions:
        for upstream in d.derived_from:
            if upstream in known:
                lines.append(f"{_quote(upstream)} -> {_quote(d.identifier)};")
    lines.append("}")
    return "\n".join(lines)


def render_svg(dot_source: str, *, spread_leaves: bool = False) -> str:
    """The SVG ``dot`` lays out for ``dot_source`` (without its XML prolog, for inlining in HTML).

    ``spread_leaves`` first runs Graphviz ``unflatten``, so that a product's many leaf tables
    take a few ranks instead of one very long column.
    """
    executable = shutil.which(DOT)
    if executable is None:
        raise GraphvizMissing("Graphviz `dot` is not installed (Debian package graphviz); the map needs it.")
    if spread_leaves:
        dot_source = _run([shutil.which(UNFLATTEN[0]) or UNFLATTEN[0], *UNFLATTEN[1:]], dot_source)
    svg = _run([executable, "-Tsvg"], dot_source)
    return svg[svg.index("<svg") :]


def _run(command: Sequence[str], text: str) -> str:
    return subprocess.run(
        list(command), input=text, capture_output=True, text=True, check=True, timeout=DOT_TIMEOUT_SECONDS
    ).stdout


_MAP_JS = """
(function () {
  var neighbours = JSON.parse(document.getElementById('neighbours').textContent);
  function viewBoxOf(svg) { return svg.getAttribute('viewBox').split(/[ ,]+/).map(Number); }
  function setViewBox(svg, box) { svg.setAttribute('viewBox', box.join(' ')); }
  document.querySelectorAll('.viewport svg').forEach(function (svg) {
    svg.removeAttribute('width'); svg.removeAttribute('height');
    svg.dataset.full = svg.getAttribute('viewBox');
    svg.addEventListener('wheel', function (event) {
      event.preventDefault();
      var box = viewBoxOf(svg), point = svg.createSVGPoint();
      point.x = event.clientX; point.y = event.clientY;
      var at = point.matrixTransform(svg.getScreenCTM().inverse());
      var factor = event.deltaY > 0 ? 1.2 : 1 / 1.2;
      setViewBox(svg, [at.x - (at.x - box[0]) * factor, at.y - (at.y - box[1]) * factor,
                       box[2] * factor, box[3] * factor]);
    }, {passive: false});
    var drag = null;
    svg.addEventListener('mousedown', function (event) {
      drag = [event.clientX, event.clientY, viewBoxOf(svg)];
    });
    window.addEventListener('mouseup', function () { drag = null; });
    svg.addEventListener('mousemove', function (event) {
      if (!drag) { return; }
      var box = drag[2], scale = box[2] / svg.getBoundingClientRect().width;
      setViewBox(svg, [box[0] - (event.clientX - drag[0]) * scale, box[1] - (event.clientY - drag[1]) * scale,
                       box[2], box[3]]);
    });
  });
  var map = document.querySelector('#snds-map svg');
  function node(name) { return document.getElementById('table:' + name); }
  function focus(name) {
    if (!node(name)) { return false; }
    var keep = [name].concat(neighbours.tables[name] || []);
    map.classList.add('focused');
    map.querySelectorAll('.focus').forEach(function (el) { el.classList.remove('focus'); });
    keep.forEach(function (n) { node(n).classList.add('focus'); });
    (neighbours.edges[name] || []).forEach(function (id) {
      document.getElementById(id).classList.add('focus');
    });
    var inverse = map.getScreenCTM().inverse(), x1 = Infinity, y1 = Infinity, x2 = -Infinity, y2 = -Infinity;
    map.querySelectorAll('.focus').forEach(function (el) {
      var r = el.getBoundingClientRect(), p = map.createSVGPoint(), q = map.createSVGPoint();
      p.x = r.left; p.y = r.top; q.x = r.right; q.y = r.bottom;
      p = p.matrixTransform(inverse); q = q.matrixTransform(inverse);
      x1 = Math.min(x1, p.x); y1 = Math.min(y1, p.y); x2 = Math.max(x2, q.x); y2 = Math.max(y2, q.y);
    });
    var margin = 40;
    setViewBox(map, [x1 - margin, y1 - margin, x2 - x1 + 2 * margin, y2 - y1 + 2 * margin]);
    var info = document.getElementById('focus-info');
    info.innerHTML = '';
    var link = document.createElement('a');
    link.href = 'dictionary/tables/' + name.replace(/[^A-Za-z0-9_-]/g, '_') + '.html';
    link.textContent = name + ' in the dictionary';
    info.appendChild(link);
    var around = (neighbours.tables[name] || []).join(', ');
    info.appendChild(document.createTextNode(' \\u2014 neighbours: ' + around));
    window.focusedTable = name;
    return true;
  }
  function reset() {
    map.classList.remove('focused');
    map.querySelectorAll('.focus').forEach(function (el) { el.classList.remove('focus'); });
    map.setAttribute('viewBox', map.dataset.full);
    document.getElementById('focus-info').textContent = '';
    window.focusedTable = null;
  }
  window.focusTable = focus;
  map.querySelectorAll('g.node').forEach(function (g) {
    g.addEventListener('click', function () { focus(g.id.slice('table:'.length)); });
  });
  var box = document.getElementById('focus');
  box.addEventListener('change', function () { focus(box.value.trim().toUpperCase()) || reset(); });
  document.getElementById('reset').addEventListener('click', reset);
  var asked = new URLSearchParams(window.location.search).get('focus');
  if (asked) { box.value = asked; focus(asked); }
})();
"""

_MAP_STYLE = """
<style>
body{max-width:none}.maps{display:flex;gap:1rem}.viewport{border:1px solid #ccd;height:80vh;overflow:hidden}
#snds-map{flex:3}#lineage{flex:1}.viewport svg{width:100%;height:100%;cursor:grab;user-select:none}
svg.focused g.node,svg.focused g.edge{opacity:.12}svg.focused g.focus{opacity:1}
svg.focused g.node.focus polygon,svg.focused g.node.focus path{stroke-width:2}
</style>
"""


def _neighbours(links: Sequence[JoinLink]) -> dict:
    tables: dict[str, set[str]] = {}
    edges: dict[str, list[str]] = {}
    for number, link in enumerate(links):
        tables.setdefault(link.source, set()).add(link.target)
        tables.setdefault(link.target, set()).add(link.source)
        for name in (link.source, link.target):
            edges.setdefault(name, []).append(f"join:{number}")
    return {"tables": {name: sorted(found - {name}) for name, found in tables.items()}, "edges": edges}


def cartography_page(
    reference: SndsReference,
    links: Sequence[JoinLink],
    held: set[str],
    descriptions: Sequence[DatasetDescription],
) -> str:
    """``cartography.html``: the SNDS map and the hub's lineage, laid out by dot, inline."""
    snds_svg = render_svg(snds_dot(reference, links, held), spread_leaves=True)
    lineage_svg = render_svg(lineage_dot(descriptions))
    options = "".join(f'<option value="{escape(name)}">' for name in sorted(reference.tables))
    neighbours = json.dumps(_neighbours(links)).replace("</", "<\\/")
    body = (
        _MAP_STYLE
        + f"<p>The {len(reference.tables)} tables of the SNDS grouped by product, joined by their keys "
        "(schema-snds and dico-snds); green: tables the hub registers. Wheel to zoom, drag to pan, click a "
        "table to focus it and its neighbours. Beside it, the hub's own lineage: raw tables → marts → OMOP → "
        "open data.</p>"
        '<p><input id="focus" list="tables" placeholder="Focus a table, e.g. ER_PRS_F">'
        f'<datalist id="tables">{options}</datalist> <button id="reset">Show all</button> '
        '<span id="focus-info"></span></p>'
        f'<div class="maps"><div class="viewport" id="snds-map">{snds_svg}</div>'
        f'<div class="viewport" id="lineage">{lineage_svg}</div></div>'
        f'<script id="neighbours" type="application/json">{neighbours}</script>'
        f"<script>{_MAP_JS}</script>"
    )
    return page("Cartography of the SNDS", body)
