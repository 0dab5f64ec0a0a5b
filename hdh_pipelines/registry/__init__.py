"""The dataset registry: one Table Schema (frictionless) JSON per dataset the hub accepts.

The schemas are the contract between providers and the hub: a delivery naming a
dataset the registry cannot resolve is refused, and every later step (raw load,
typing, quality, linkage) reads its column list, types and keys from here rather
than hard-coding them. SNDS schemas keep name, type, format and constraints of
the Health Data Hub's ``schema-snds`` for every column they declare, so that
knowledge of the real tables applies unchanged, with two exceptions:

- ``schema-snds``'s ``minimum``/``maximum`` bound the generator of its synthetic
  sample; they are not facts about the SNDS (regularisation lines carry
  negative quantities), so the registry drops each of them as a declared
  override (below); plausible ranges are warnings in ``expectations/``.
- A deliberate difference from the reference (a FINESS number typed string
  because Corsican ones start with 2A/2B…) is declared on the field itself as
  ``"x-hdh-reference-override": {"reason": "...", "reference": {"schema-snds":
  {...}, "dico-snds": {...}}}``, where ``reference`` records what each
  reference says for every property the registry changes (``type``,
  ``format``, ``constraints``, ``nomenclature``… of ``schema-snds``; the
  storage ``format`` of ``dico-snds``; the ``name`` a code list of
  ``synthetic-snds`` misspells). ``tests/test_registry_reference.py``
  fails on any other difference, and on an override that no longer differs.

Dates that are SNDS conventions rather than events (``1600-01-01`` for an
unknown date, ``9999-12-31`` for an open end…) are listed in the dataset's
``hdh.sentinel_dates`` with their meaning; ``hdh.missing_date`` is one of them.

A dataset name may stand for a family of delivered names (``NAME_PLACEHOLDERS``):
a lowercase ``aa`` is a two-digit year (the SNDS ships one ``T_MCO23B``,
``T_MCO24B``… per year, all described by ``T_MCOaaB``), ``xx`` a two-digit
version (``T_MCOaaGVxx``, the GHM version), ``_AAAA_`` a four-digit year and a
final ``_GN`` the algorithm version of the pathology map (``CT_IND_AAAA_GN``
describes ``CT_IND_2022_G10``).

Most SNDS datasets are generated from the references by
``hdh_pipelines/registry/generate.py`` (they carry ``x-hdh-generated``); the
others are curated by hand and win over generation. A curated SNDS dataset is
an overlay on its reference table: generation writes every reference column
into it (marked ``x-hdh-reference-column``) and keeps the hand-written ones. ``docs/registry.md`` says how
to regenerate and how to declare an override.

Pure Python on purpose: usable from Dagster assets, the delivery CLI and tests alike.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hdh_deliver.names import is_provider

REGISTRY_ENV_VAR = "HDH_DATASET_REGISTRY"
REFERENCE_OVERRIDE_KEY = "x-hdh-reference-override"
GENERATED_KEY = "x-hdh-generated"
# On a column of a curated dataset: taken from the reference by generation, not written by hand.
REFERENCE_COLUMN_KEY = "x-hdh-reference-column"
REFERENCE_SOURCES = ("schema-snds", "dico-snds", "synthetic-snds")
DATASETS_DIR = Path(__file__).parent / "datasets"
# Placeholder in a family's name -> what it stands for in a delivered name (see the module docstring).
NAME_PLACEHOLDERS = {"aa": "[0-9]{2}", "xx": "[0-9]{2}", "AAAA": "[0-9]{4}", "GN": "G[0-9]+"}
_PLACEHOLDER = re.compile(r"aa|xx|(?<=_)AAAA(?=_)|(?<=_)GN$")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# Table Schema type -> DuckDB type. A schema using any other type is refused at
# load time, so every declared field has a DuckDB type.
_DUCKDB_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "number": "DOUBLE",
    "date": "DATE",
    "datetime": "TIMESTAMP",
    "boolean": "BOOLEAN",
    "year": "INTEGER",
    # A month of a year, kept as its first day.
    "yearmonth": "DATE",
}


class RegistryError(ValueError):
    """A schema file that cannot be trusted as a contract (the message names the file)."""


@dataclass(frozen=True)
class Field:
    """One column. ``format`` is a strptime pattern, or None for the Table Schema default (ISO 8601).

    ``nomenclature`` names the SNDS code list (``IR_SEX_V:SEX_COD``) of a coded
    column; ``reference_override`` is the declared difference from the reference
    (``reason`` and the reference's own values), or None.
    """

    name: str
    type: str
    required: bool
    description: str
    constraints: Mapping[str, Any]
    format: str | None
    nomenclature: str | None = None
    reference_override: Mapping[str, Any] | None = None
    # A curated dataset's column that generation took from its reference table (REFERENCE_COLUMN_KEY):
    # registered so that a full extract loads, not read by the dataset's hand-written code.
    overlay: bool = False

    def duckdb_type(self) -> str:
        return _DUCKDB_TYPES[self.type]


@dataclass(frozen=True)
class ForeignKey:
    """``fields`` reference ``reference_fields`` of dataset ``resource`` (possibly year-templated)."""

    fields: tuple[str, ...]
    resource: str
    reference_fields: tuple[str, ...]


@dataclass(frozen=True)
class DatasetSchema:
    """A dataset's schema; ``raw`` is the whole JSON document, for the properties not modelled here."""

    name: str
    title: str
    description: str
    fields: tuple[Field, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...]
    family: str
    event_date: str | None
    raw: Mapping[str, Any]
    person_id: tuple[str, ...] = ()
    # The providers allowed to deliver this dataset (``providers``): a file of it
    # from anyone else is refused before decryption, and staging reads only their rows.
    providers: tuple[str, ...] = ()

    @property
    def generated(self) -> bool:
        """Generated from the SNDS references (``x-hdh-generated``), not curated by hand."""
        return GENERATED_KEY in self.raw

    def field(self, name: str) -> Field:
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(f"Dataset {self.name} has no column {name!r}.")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def own_fields(self) -> tuple[Field, ...]:
        """Every column of a generated dataset; a curated one's hand-written columns (no overlay)."""
        return tuple(f for f in self.fields if not f.overlay)

    @property
    def sentinel_dates(self) -> tuple[str, ...]:
        """ISO dates that are conventions of the source (unknown, open end), not events.

        ``hdh.missing_date`` is one of them even where ``hdh.sentinel_dates`` does not list it.
        """
        hdh = self.raw.get("hdh", {})
        days = [hdh["missing_date"]] if hdh.get("missing_date") else []
        return tuple(dict.fromkeys([*days, *hdh.get("sentinel_dates", {})]))


def _names(value: str | list[str]) -> tuple[str, ...]:
    # Table Schema allows a single field name where a list is expected.
    return (value,) if isinstance(value, str) else tuple(value)


def _parse(document: Mapping[str, Any], source: Path) -> DatasetSchema:
    def fail(message: str) -> RegistryError:
        return RegistryError(f"{source}: {message}")

    name = document.get("name")
    if name != source.stem:
        raise fail(f"the schema is named {name!r}; the file name says {source.stem!r}.")
    providers = _providers(document.get("providers"), fail)
    primary_key = _names(document.get("primaryKey", []))
    fields = []
    for spec in document.get("fields", []):
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            raise fail("a column has no name.")
        if spec.get("type") not in _DUCKDB_TYPES:
            raise fail(f"column {spec.get('name')!r} has unsupported type {spec.get('type')!r}.")
        constraints = MappingProxyType(dict(spec.get("constraints", {})))
        fmt = spec.get("format")
        override = spec.get(REFERENCE_OVERRIDE_KEY)
        if override is not None and not (
            isinstance(override, Mapping)
            and isinstance(override.get("reason"), str)
            and override["reason"].strip()
            and isinstance(override.get("reference", {}), Mapping)
            and all(
                origin in REFERENCE_SOURCES and isinstance(values, Mapping)
                for origin, values in override.get("reference", {}).items()
            )
        ):
            raise fail(
                f"column {spec['name']!r}: {REFERENCE_OVERRIDE_KEY} needs a non-empty reason, and its "
                f"reference maps {' or '.join(REFERENCE_SOURCES)} to the values the registry departs from."
            )
        fields.append(
            Field(
                name=spec["name"],
                type=spec["type"],
                # Table Schema treats primary-key values as non-null.
                required=bool(constraints.get("required")) or spec["name"] in primary_key,
                description=spec.get("description", ""),
                constraints=constraints,
                format=None if fmt in (None, "default") else fmt,
                nomenclature=spec.get("nomenclature"),
                reference_override=None if override is None else MappingProxyType(dict(override)),
                overlay=REFERENCE_COLUMN_KEY in spec,
            )
        )
    columns = [f.name for f in fields]
    if not columns:
        raise fail("the schema declares no columns.")
    if len(set(columns)) != len(columns):
        raise fail("a column is declared twice.")
    foreign_keys = tuple(
        ForeignKey(_names(fk["fields"]), fk["reference"]["resource"], _names(fk["reference"]["fields"]))
        for fk in document.get("foreignKeys", [])
    )
    hdh = document.get("hdh", {})
    event_date = hdh.get("event_date")
    person_id = tuple(hdh.get("person_id", ()))
    used = [*primary_key, *person_id, *(c for fk in foreign_keys for c in fk.fields)]
    if event_date is not None:
        used.append(event_date)
    undeclared = sorted(set(used) - set(columns))
    if undeclared:
        raise fail(f"keys or hdh properties name undeclared columns: {', '.join(undeclared)}.")
    if not hdh.get("family"):
        raise fail("hdh.family is missing.")
    sentinels = hdh.get("sentinel_dates", {})
    if not isinstance(sentinels, Mapping) or not all(
        isinstance(day, str) and _ISO_DATE.fullmatch(day) and isinstance(meaning, str) and meaning
        for day, meaning in sentinels.items()
    ):
        raise fail("hdh.sentinel_dates must map ISO dates (YYYY-MM-DD) to what each one means.")
    return DatasetSchema(
        name=name,
        title=document.get("title", name),
        description=document.get("description", ""),
        fields=tuple(fields),
        primary_key=primary_key,
        foreign_keys=foreign_keys,
        family=hdh["family"],
        event_date=event_date,
        raw=MappingProxyType(dict(document)),
        person_id=person_id,
        providers=providers,
    )


def _providers(value: Any, fail: Callable[[str], RegistryError]) -> tuple[str, ...]:
    """The ``providers`` key: required, a non-empty list of distinct hdh-delivery/1 provider ids."""
    if value is None:
        raise fail(
            '"providers" is missing: list the provider ids allowed to deliver this dataset '
            '(e.g. "providers": ["cnam"]), right after "name".'
        )
    if not isinstance(value, list) or not value:
        raise fail('"providers" must be a non-empty list of provider ids.')
    invalid = [repr(p) for p in value if not isinstance(p, str) or not is_provider(p)]
    if invalid:
        names = ", ".join(invalid)
        raise fail(f'"providers" holds names hdh-delivery/1 does not allow as provider ids: {names}.')
    if len(set(value)) != len(value):
        raise fail('"providers" names a provider twice.')
    return tuple(value)


# The placeholders that stand for a year (two digits: 20xx; four digits).
_YEAR_TOKENS = frozenset({"aa", "xx", "AAAA"})


def _family_pattern(name: str) -> re.Pattern[str] | None:
    """The delivered names a family's name stands for, or None if ``name`` has no placeholder; the first
    year placeholder is the group ``year``."""
    parts = _PLACEHOLDER.split(name)
    if len(parts) == 1:
        return None
    regex, year_seen = re.escape(parts[0]), False
    for token, after in zip(_PLACEHOLDER.findall(name), parts[1:], strict=True):
        piece = NAME_PLACEHOLDERS[token]
        if token in _YEAR_TOKENS and not year_seen:
            piece, year_seen = f"(?P<year>{piece})", True
        regex += piece + re.escape(after)
    return re.compile(regex)


def is_family(name: str) -> bool:
    """Whether a dataset name stands for several delivered names (``T_MCOaaB``: one table per year)."""
    return _family_pattern(name) is not None


def names_carry_year(family: str) -> bool:
    """Whether the delivered names of ``family`` carry a year (``T_MCOaaB``, ``CT_IND_AAAA_GN``)."""
    return any(token in _YEAR_TOKENS for token in _PLACEHOLDER.findall(family))


def year_in_name(family: str, delivered_name: str) -> int | None:
    """The year a per-year table's delivered name carries (``T_MCO23B`` of ``T_MCOaaB`` is 2023), or None
    when the family has no year in its names or the name is not one of the family's."""
    pattern = _family_pattern(family)
    match = pattern.fullmatch(delivered_name) if pattern is not None else None
    year = match.groupdict().get("year") if match is not None else None
    if year is None:
        return None
    return 2000 + int(year) if len(year) == 2 else int(year)


class DatasetRegistry:
    """The schemas of one registry folder, resolved by exact or year-templated name."""

    def __init__(self, schemas: Mapping[str, DatasetSchema]) -> None:
        self._schemas = dict(schemas)
        self._templates = [
            (pattern, schema)
            for name, schema in self._schemas.items()
            if (pattern := _family_pattern(name)) is not None
        ]

    @classmethod
    def load(cls, directory: Path | None = None) -> DatasetRegistry:
        """Read every ``*.json`` of ``directory``, else of ``$HDH_DATASET_REGISTRY``, else the package's.

        Refuses the whole folder if one schema is unusable or a foreign key points
        to a dataset the folder does not hold: a half-loaded contract would let
        deliveries through that the full one refuses.
        """
        folder = Path(directory or os.environ.get(REGISTRY_ENV_VAR) or DATASETS_DIR)
        paths = sorted(folder.glob("*.json"))
        if not paths:
            raise RegistryError(f"{folder}: no dataset schema (*.json) found.")
        schemas = {}
        for path in paths:
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise RegistryError(f"{path}: not a readable JSON file ({error}).") from error
            schemas[path.stem] = _parse(document, path)
        registry = cls(schemas)
        for schema in schemas.values():
            for fk in schema.foreign_keys:
                target = registry.resolve(fk.resource)
                if target is None:
                    raise RegistryError(f"{schema.name}: foreign key to unknown dataset {fk.resource!r}.")
                missing = sorted(set(fk.reference_fields) - set(target.column_names))
                if missing:
                    raise RegistryError(
                        f"{schema.name}: foreign key to {target.name} names undeclared columns "
                        f"{', '.join(missing)}."
                    )
        return registry

    def resolve(self, dataset_name: str) -> DatasetSchema | None:
        """The schema of a delivered dataset name (``T_MCO23B`` -> ``T_MCOaaB``), or None if unknown."""
        exact = self._schemas.get(dataset_name)
        if exact is not None:
            return exact
        for pattern, schema in self._templates:
            if pattern.fullmatch(dataset_name):
                return schema
        return None

    def names(self) -> list[str]:
        return sorted(self._schemas)


@cache
def default_registry() -> DatasetRegistry:
    """The registry of this process (read once; ``$HDH_DATASET_REGISTRY`` is read at the first call)."""
    return DatasetRegistry.load()
