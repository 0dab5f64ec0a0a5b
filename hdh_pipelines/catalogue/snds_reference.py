"""The SNDS as the Health Data Hub documents it: one reader over schema-snds, dico-snds and the nomenclatures.

The dictionary and the cartography cover every table of the SNDS main database
whether or not the hub's registry holds it yet, so they read the public
references themselves, from ``$HDH_SNDS_REFERENCE`` (default: the copy beside
the repository, ``../shared/reference/snds``), at build time; nothing of them is
copied into the repository:

- ``schema-snds/schemas/**/<TABLE>.json``: the Table Schema of each table (its
  product, title, fields with type, description, nomenclature and history,
  primary key and foreign keys);
- ``dico-snds/app/app_data/``: the dictionary's tables (product) and links
  between tables (``snds_links.csv``, keyed by the row index of ``snds_nodes.csv``);
- ``synthetic-snds/nomenclatures/<source>/<NAME>.json`` + ``.csv``: each code
  list, its code and label columns named by the ``role`` of its fields.

Everything here is public metadata about the SNDS, never delivered data.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from hdh_pipelines.catalogue.model import JoinLink

SNDS_REFERENCE_ENV_VAR = "HDH_SNDS_REFERENCE"
# The reference copy beside the repository (../shared); production sets HDH_SNDS_REFERENCE.
DEFAULT_SNDS_REFERENCE = Path(__file__).resolve().parents[3] / "shared/reference/snds"
_DICO_DATA = Path("dico-snds/app/app_data")
# A nomenclature cell of schema-snds may name the code column too ("IR_SEX_V:SEX_COD").
_NOMENCLATURE_NAME = re.compile(r"^([A-Za-z0-9_]+)")
_NO_NOMENCLATURE = {"", "-"}


class SndsReferenceMissing(FileNotFoundError):
    """The SNDS reference folder is absent or incomplete; ``reason`` is machine-readable."""

    reason = "snds_reference_missing"


@dataclass(frozen=True)
class ReferenceVariable:
    name: str
    type: str
    description: str
    nomenclature: str | None
    created: str  # year the variable appeared, as schema-snds says ("" when unknown)
    deleted: str


@dataclass(frozen=True)
class ReferenceTable:
    """One SNDS table (a lowercase ``aa``/``AAAA`` stands for the year of per-year tables)."""

    name: str
    product: str
    title: str
    variables: tuple[ReferenceVariable, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[JoinLink, ...]  # source/target are table names
    created: str
    deleted: str


@dataclass(frozen=True)
class Nomenclature:
    """A code list; ``rows`` reads its (code, label) pairs from the reference when asked."""

    name: str
    title: str
    description: str
    source: str  # the publishing body's folder (ATIH, ORAVAL, DREES…)
    csv_path: Path
    code_column: str
    label_column: str | None

    def rows(self) -> Iterator[tuple[str, str]]:
        if not self.csv_path.exists():
            return
        with self.csv_path.open(encoding="utf-8", errors="replace", newline="") as handle:
            reader = csv.reader(handle, delimiter=";")
            header = next(reader, [])
            code = header.index(self.code_column) if self.code_column in header else None
            label = header.index(self.label_column) if self.label_column in header else None
            if code is None:
                return
            for row in reader:
                if len(row) > code:
                    yield row[code], row[label] if label is not None and len(row) > label else ""


@dataclass(frozen=True)
class DicoLink:
    """One row of dico-snds's ``snds_links.csv``: each alternative key is (source columns, target columns)."""

    source: str
    target: str
    alternatives: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    bidirectional: bool


@dataclass(frozen=True)
class SndsReference:
    folder: Path
    tables: Mapping[str, ReferenceTable]
    dico_links: tuple[DicoLink, ...]
    nomenclatures: Mapping[str, Nomenclature]

    @property
    def products(self) -> dict[str, tuple[str, ...]]:
        """Product -> its tables, in name order."""
        found: dict[str, list[str]] = {}
        for table in sorted(self.tables.values(), key=lambda t: t.name):
            found.setdefault(table.product, []).append(table.name)
        return {product: tuple(names) for product, names in sorted(found.items())}


def reference_folder() -> Path:
    return Path(os.environ.get(SNDS_REFERENCE_ENV_VAR) or DEFAULT_SNDS_REFERENCE)


def _nomenclature_name(cell: str | None) -> str | None:
    if cell is None or cell.strip() in _NO_NOMENCLATURE:
        return None
    match = _NOMENCLATURE_NAME.match(cell.strip())
    return match.group(1) if match else None


def _history(document: Mapping) -> tuple[str, str]:
    history = document.get("history", document)
    return str(history.get("dateCreated") or ""), str(history.get("dateDeleted") or "")


def _table(document: Mapping, product_of: Mapping[str, str]) -> ReferenceTable:
    name = document["name"]
    variables = tuple(
        ReferenceVariable(
            field["name"],
            field.get("type", ""),
            " ".join(str(field.get("description", "")).split()),
            _nomenclature_name(field.get("nomenclature")),
            *_history(field),
        )
        for field in document.get("fields", [])
    )
    primary_key = document.get("primaryKey", [])
    foreign_keys = tuple(
        JoinLink(
            name,
            fk["reference"]["resource"],
            tuple([fk["fields"]] if isinstance(fk["fields"], str) else fk["fields"]),
            tuple(
                [fk["reference"]["fields"]]
                if isinstance(fk["reference"]["fields"], str)
                else fk["reference"]["fields"]
            ),
        )
        for fk in document.get("foreignKeys", [])
    )
    return ReferenceTable(
        name=name,
        # The dictionary's product wins: it is the grouping the HDH's own tools show.
        product=product_of.get(name) or str(document.get("produit", "")),
        title=str(document.get("title", "")),
        variables=variables,
        primary_key=tuple([primary_key] if isinstance(primary_key, str) else primary_key),
        foreign_keys=foreign_keys,
        created=_history(document)[0],
        deleted=_history(document)[1],
    )


def _columns(part: str) -> tuple[str, ...]:
    return tuple(column.strip() for column in part.split("+") if column.strip())


def parse_joint_var(text: str) -> tuple[tuple[tuple[tuple[str, ...], tuple[str, ...]], ...], bool]:
    """dico-snds's ``joint_var``: alternatives ``A + B`` or ``A => C`` between ``|``; ``Bidirectionnel``.

    Returns the alternatives as (source columns, target columns) and whether the link goes both ways.
    """
    alternatives, bidirectional = [], False
    for part in text.split("|"):
        part = part.strip()
        if part.lower() == "bidirectionnel":
            bidirectional = True
        elif "=>" in part:
            source, target = part.split("=>", 1)
            alternatives.append((_columns(source), _columns(target)))
        elif part:
            alternatives.append((_columns(part), _columns(part)))
    return tuple(alternatives), bidirectional


def _dico_links(folder: Path) -> tuple[DicoLink, ...]:
    with (folder / "snds_nodes.csv").open(encoding="utf-8", newline="") as handle:
        names = {row["index"]: row["name"] for row in csv.DictReader(handle)}
    links = []
    with (folder / "snds_links.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            alternatives, bidirectional = parse_joint_var(row["joint_var"])
            links.append(DicoLink(names[row["source"]], names[row["target"]], alternatives, bidirectional))
    return tuple(links)


def _nomenclatures(folder: Path) -> dict[str, Nomenclature]:
    found = {}
    for path in sorted(folder.glob("*/*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        roles = {field.get("role"): field["name"] for field in document.get("fields", [])}
        if "code" not in roles:
            continue
        found[document["name"]] = Nomenclature(
            name=document["name"],
            title=" ".join(str(document.get("title", "")).split()),
            description=" ".join(str(document.get("description", "")).split()),
            source=path.parent.name,
            csv_path=path.with_suffix(".csv"),
            code_column=roles["code"],
            label_column=roles.get("label"),
        )
    return found


def read_snds_reference(folder: Path | None = None) -> SndsReference:
    """Every SNDS table, the dictionary's links and the nomenclatures, from ``folder`` or as configured."""
    return _read(folder or reference_folder())


@cache  # the references do not change while a process runs; each build would otherwise parse 188 schemas
def _read(folder: Path) -> SndsReference:
    schemas, dico = folder / "schema-snds" / "schemas", folder / _DICO_DATA
    if not schemas.is_dir() or not (dico / "snds_links.csv").exists():
        raise SndsReferenceMissing(
            f"The SNDS reference is not at {folder} (schema-snds/schemas and {_DICO_DATA} are needed); "
            f"set {SNDS_REFERENCE_ENV_VAR} to the folder holding them."
        )
    with (dico / "snds_tables.csv").open(encoding="utf-8", newline="") as handle:
        product_of = {row["Table"]: row["Produit"] for row in csv.DictReader(handle)}
    tables = {}
    for path in sorted(schemas.rglob("*.json")):
        table = _table(json.loads(path.read_text(encoding="utf-8")), product_of)
        tables[table.name] = table
    return SndsReference(
        folder=folder,
        tables=tables,
        dico_links=_dico_links(dico),
        nomenclatures=_nomenclatures(folder / "synthetic-snds" / "nomenclatures"),
    )
