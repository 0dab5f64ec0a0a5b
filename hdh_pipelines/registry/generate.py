"""Generate the registry's SNDS datasets from the references: ``python -m hdh_pipelines.registry.generate``.

Generated at build time, committed, and checked: ``tests/test_registry_generated.py``
regenerates everything from the references and fails unless the bytes are the
committed ones, so the registry cannot drift from ``schema-snds`` without a diff
a reviewer sees. The references are never read at run time (the hub does not
ship them).

Inputs, all read-only:

- ``schema-snds/schemas/**/<TABLE>.json`` (MPL-2.0): every table of the SNDS main
  database. A dataset keeps each column's name, description, type, format,
  nomenclature, boolean values and constraints, its primary and foreign keys;
  ``minimum``/``maximum`` are dropped (they bound the synthetic generator, not
  the SNDS) and each drop is declared on the field as an override.
- ``synthetic-snds/nomenclatures/**/<CODE_LIST>.json`` (Licence Ouverte 2.0): the
  code lists, registered as referential datasets delivered like any table
  (versioned by delivery: the staging of a referential keeps the latest).
- ``reference_overrides.json`` next to this module: where ``dico-snds`` stores a
  generated column in a way its ``schema-snds`` type cannot read, the project's
  decision and its reason (the registry keeps schema-snds's type).
- The hand-curated datasets (any ``datasets/*.json`` without
  :data:`GENERATED_KEY`) win over generation. A curated dataset whose
  ``hdh.source`` names a reference table is an overlay on it: every column of
  the reference is written into it as generation makes it, marked
  :data:`REFERENCE_COLUMN_KEY`, after the columns written by hand (no
  marker), which are kept as they are. So a full extract of
  a curated table loads, and each column has one source: the reference, or the
  hand-written definition. To curate one more column, drop its marker and edit it.

Table-level rules that apply to every generated SNDS table, rather than to a column:

- Dates: the SNDS writes an unknown date 1600-01-01 (:data:`SNDS_SENTINEL_DATES`).
- ``yearmonth`` columns are delivered as ``YYYYMM`` (dico-snds: ``string (6)``),
  not Table Schema's default ``YYYY-MM``: the registry declares the format
  ``%Y%m`` and says so in an override.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hdh_pipelines.registry import DATASETS_DIR, GENERATED_KEY, REFERENCE_COLUMN_KEY, REFERENCE_OVERRIDE_KEY

GENERATED_BY = "python -m hdh_pipelines.registry.generate"
OVERRIDES_PATH = Path(__file__).parent / "reference_overrides.json"
DEFAULT_REFERENCE = Path(__file__).resolve().parents[3] / "shared/reference/snds"
# What SOURCE.md of the reference folder records: the snapshot each copy is from and its licence.
SOURCES = {
    "schema-snds": {"repository": "indsante/schema-snds", "commit": "fe17ef83", "licence": "MPL-2.0"},
    "synthetic-snds": {
        "repository": "indsante/synthetic-snds",
        "commit": "4d1c7494",
        "licence": "Licence Ouverte / Etalab 2.0",
        "attribution": "Health Data Hub, synthetic-snds, 2021-04-19",
    },
}
# Every SNDS table may deliver the one provider the hub receives the SNDS from.
SNDS_PROVIDERS = ["cnam"]
SNDS_MISSING_DATE = "1600-01-01"
SNDS_SENTINEL_DATES = {
    "1600-01-01": "Date inconnue ou sans objet, la valeur manquante du SNDS (Documentation-SNDS, "
    "formation_snds/documents_cnam/essentiel_snds.md).",
    "0001-01-01": "Ancienne valeur manquante (1er janvier de l'an 1), que le SNDS remplace par 1600-01-01 "
    "(Documentation-SNDS, essentiel_snds.md).",
    "9999-12-31": "Fin ouverte d'une période de validité (31DEC9999, Documentation-SNDS "
    "fiches/tables_affinees.md).",
}
BOUND_REASON = (
    "schema-snds's minimum/maximum bound the generator of its synthetic sample (tsfaker), they are not facts "
    "about the SNDS (regularisation lines carry negative quantities): plausible ranges are warnings in "
    "expectations/, never a blocking bound."
)
YEARMONTH_FORMAT = "%Y%m"
YEARMONTH_REASON = (
    "The SNDS stores a year and month as 6 characters YYYYMM (dico-snds: string (6); the synthetic sample "
    "too), not Table Schema's default YYYY-MM."
)
# The Table Schema properties of a column the registry keeps (the rest documents the reference itself).
KEPT_FIELD_PROPERTIES = ("name", "type", "format", "description", "nomenclature", "constraints", "trueValues",
                         "falseValues")  # fmt: skip


_ROLE_DESCRIPTIONS = {"code": "Code de la nomenclature.", "label": "Libellé du code."}


MISENCODED_NAME_REASON = (
    "synthetic-snds's schema spells this column as UTF-8 bytes read as Latin-1 (Ã© for é); its CSV header, "
    "what a provider delivers, has the right name."
)


def _repaired_name(name: str) -> str:
    """``LibellÃ© ATC2`` -> ``Libellé ATC2``: a name whose UTF-8 was decoded as Latin-1, else unchanged."""
    try:
        return name.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


class GenerationError(ValueError):
    """A reference or override the generator cannot turn into a dataset (the message says which)."""


def _clean_field(spec: Mapping[str, Any]) -> dict[str, Any]:
    field = {k: spec[k] for k in KEPT_FIELD_PROPERTIES if k in spec}
    if field.get("format") == "default":
        del field["format"]
    if field.get("nomenclature") in ("", "-"):
        del field["nomenclature"]
    if not field.get("description"):
        field.pop("description", None)
    return field


def _apply_rules(field: dict[str, Any], declared: Mapping[str, Any] | None) -> dict[str, Any]:
    """The generated column: generator bounds dropped, ``yearmonth`` as YYYYMM, the project's override.

    Every property that then differs from schema-snds is recorded in the
    field's ``x-hdh-reference-override`` with schema-snds's own value.
    """
    reference: dict[str, Any] = {}
    reasons = []
    constraints = dict(field.get("constraints", {}))
    if {"minimum", "maximum"} & set(constraints):
        reference["constraints"] = dict(constraints)
        for bound in ("minimum", "maximum"):
            constraints.pop(bound, None)
        reasons.append(BOUND_REASON)
        if constraints:
            field["constraints"] = constraints
        else:
            del field["constraints"]
    if field["type"] == "yearmonth":
        reference["format"] = field.get("format", "default")
        field["format"] = YEARMONTH_FORMAT
        reasons.append(YEARMONTH_REASON)
    override: dict[str, Any] = {}
    if declared:
        reasons.append(declared["reason"])
        override["dico-snds"] = dict(declared["dico-snds"])
    if reference:
        override["schema-snds"] = reference
    if reasons:
        field[REFERENCE_OVERRIDE_KEY] = {"reason": " ".join(reasons), "reference": override}
    return field


def table_dataset(document: Mapping[str, Any], path: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The registry document of one schema-snds table (``path`` relative to ``schema-snds``)."""
    name = document["name"]
    declared = overrides.get(name, {})
    unknown = sorted(set(declared) - {f["name"] for f in document["fields"]})
    if unknown:
        raise GenerationError(f"reference_overrides.json: {name} has no column {', '.join(unknown)}.")
    fields = [_apply_rules(_clean_field(f), declared.get(f["name"])) for f in document["fields"]]
    dataset: dict[str, Any] = {
        "name": name,
        GENERATED_KEY: GENERATED_BY,
        "providers": SNDS_PROVIDERS,
        "title": document.get("title") or name,
        "description": document.get("observation") or document.get("title") or name,
        "missingValues": document.get("missingValues", [""]),
        "fields": fields,
    }
    if document.get("primaryKey"):
        key = document["primaryKey"]
        dataset["primaryKey"] = [key] if isinstance(key, str) else list(key)
    if document.get("foreignKeys"):
        dataset["foreignKeys"] = document["foreignKeys"]
    dataset["hdh"] = {
        "family": "SNDS",
        "product": document.get("produit", ""),
        "missing_date": SNDS_MISSING_DATE,
        "sentinel_dates": SNDS_SENTINEL_DATES,
        "source": {**SOURCES["schema-snds"], "path": f"schemas/{path}"},
    }
    return dataset


def nomenclature_dataset(document: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The registry document of one synthetic-snds code list, a referential (``role``: code or label)."""
    name = document["name"]
    fields = []
    for spec in document["fields"]:
        field = _clean_field(spec)
        repaired = _repaired_name(spec["name"])
        if repaired != spec["name"]:
            field["name"] = repaired
            field[REFERENCE_OVERRIDE_KEY] = {
                "reason": MISENCODED_NAME_REASON,
                "reference": {"synthetic-snds": {"name": spec["name"]}},
            }
        # synthetic-snds describes a code list's columns by their role only (code, label).
        field["description"] = _ROLE_DESCRIPTIONS.get(
            spec.get("role"), f"Colonne de la nomenclature {name} (non décrite par synthetic-snds)."
        )
        fields.append(field)
    key = document.get("primaryKey") or []
    return {
        "name": name,
        GENERATED_KEY: GENERATED_BY,
        "providers": SNDS_PROVIDERS,
        "title": document.get("title") or name,
        "description": document.get("description")
        or f"Nomenclature {name} du SNDS ({document.get('title') or name}), livrée comme un référentiel : "
        "chaque livraison en est une version, la staging garde la dernière, code par code.",
        "missingValues": document.get("missingValues", [""]),
        "fields": fields,
        "primaryKey": [key] if isinstance(key, str) else list(key),
        "hdh": {
            "family": "SNDS",
            "product": "NOMENCLATURES",
            "referential": True,
            "source": {**SOURCES["synthetic-snds"], "path": f"nomenclatures/{path}"},
        },
    }


def _curated(directory: Path) -> dict[str, dict[str, Any]]:
    """Name -> document of every curated dataset of ``directory``."""
    documents = (json.loads(path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.json")))
    return {document["name"]: document for document in documents if GENERATED_KEY not in document}


def overlaid(curated: Mapping[str, Any], reference_fields: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``curated`` with every reference column: its hand-written columns as written, the others generated.

    ``reference_fields`` are the columns generation makes of the reference table
    (:func:`table_dataset`, :func:`nomenclature_dataset`); those not written by
    hand follow the hand-written ones, in the reference's order, and carry
    :data:`REFERENCE_COLUMN_KEY`. A hand-written
    column the reference does not have is refused: the overlay adds to the
    reference, it does not invent columns.
    """
    hand_written = {f["name"]: f for f in curated["fields"] if REFERENCE_COLUMN_KEY not in f}
    reference_names = [f["name"] for f in reference_fields]
    unknown = sorted(set(hand_written) - set(reference_names))
    if unknown:
        raise GenerationError(
            f"{curated['name']}: hand-written columns {', '.join(unknown)} are not in its reference table."
        )
    # Hand-written columns first, as written: code and tests that read a curated dataset's columns by
    # position (the DCIR join key is ER_PRS_F's first nine) keep working.
    added = [
        {**f, REFERENCE_COLUMN_KEY: GENERATED_BY} for f in reference_fields if f["name"] not in hand_written
    ]
    return {**curated, "fields": [*hand_written.values(), *added]}


def _sorted_references(folder: Path) -> Iterable[Path]:
    return sorted(folder.rglob("*.json"), key=lambda p: p.relative_to(folder).as_posix())


def generate(reference: Path, directory: Path = DATASETS_DIR) -> dict[str, str]:
    """File name -> text of every generated dataset and of every curated one overlaid on its reference
    table (:func:`overlaid`), from ``reference``."""
    overrides = json.loads(OVERRIDES_PATH.read_text(encoding="utf-8"))["tables"]
    curated = _curated(directory)
    out: dict[str, str] = {}

    def add(dataset: Mapping[str, Any]) -> None:
        file = f"{dataset['name']}.json"
        if file in out:
            raise GenerationError(f"{dataset['name']} is both a table and a nomenclature.")
        out[file] = json.dumps(dataset, ensure_ascii=False, indent=1) + "\n"

    def add_or_overlay(name: str, dataset: Mapping[str, Any], source: str) -> None:
        if name not in curated:
            add(dataset)
            return
        if curated[name].get("hdh", {}).get("source", {}).get("repository") != SOURCES[source]["repository"]:
            return
        overlay = overlaid(curated[name], dataset["fields"])
        # A dataset that hand-writes every reference column is left as written (and as formatted).
        if overlay != curated[name]:
            add(overlay)

    tables = reference / "schema-snds/schemas"
    for path in _sorted_references(tables):
        document = json.loads(path.read_text(encoding="utf-8"))
        dataset = table_dataset(document, path.relative_to(tables).as_posix(), overrides)
        add_or_overlay(document["name"], dataset, "schema-snds")
    unknown = sorted(set(overrides) - {p.stem for p in tables.rglob("*.json")} - set(curated))
    if unknown:
        raise GenerationError(f"reference_overrides.json names unknown tables: {', '.join(unknown)}.")
    nomenclatures = reference / "synthetic-snds/nomenclatures"
    for path in _sorted_references(nomenclatures):
        document = json.loads(path.read_text(encoding="utf-8"))
        dataset = nomenclature_dataset(document, path.relative_to(nomenclatures).as_posix())
        add_or_overlay(document["name"], dataset, "synthetic-snds")
    return out


def stale_files(directory: Path, generated: Mapping[str, str]) -> list[str]:
    """Generated files of ``directory`` the references no longer produce."""
    return sorted(
        path.name
        for path in directory.glob("*.json")
        if path.name not in generated and GENERATED_KEY in json.loads(path.read_text(encoding="utf-8"))
    )


def write(reference: Path, directory: Path = DATASETS_DIR) -> int:
    generated = generate(reference, directory)
    for name in stale_files(directory, generated):
        (directory / name).unlink()
    for name, text in generated.items():
        (directory / name).write_text(text, encoding="utf-8")
    return len(generated)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="the snds reference folder")
    args = parser.parse_args(argv)
    count = write(args.reference)
    print(f"{count} generated datasets written to {DATASETS_DIR}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
