"""The registry agrees with the SNDS references column by column, except where it says why not.

For every column of an SNDS dataset, against ``schema-snds`` (the Table
Schemas) and ``dico-snds`` (the dictionary of the SNDS's own storage): the
column exists; its type, format, constraints, boolean values and nomenclature
are schema-snds's; its type can be read from dico-snds's storage and its
nomenclature is the dictionary's. A property may differ only where the field
declares ``x-hdh-reference-override`` with a reason and what the reference says
(so the override is checked against the reference too, and a stale one fails).
Any other difference fails the test, which names the column and the property.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from hdh_pipelines.registry import (
    DATASETS_DIR,
    REFERENCE_OVERRIDE_KEY,
    DatasetRegistry,
    DatasetSchema,
    RegistryError,
    default_registry,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared/reference/snds"
SCHEMA_SNDS = REFERENCE / "schema-snds"
DICO_VARS = REFERENCE / "dico-snds/app/app_data/snds_vars.csv"
# The Table Schema properties of a column that the registry takes from schema-snds.
COMPARED = ("type", "format", "constraints", "nomenclature", "trueValues", "falseValues")
# dico-snds gives the storage of each column (``string (9)``, ``number (4,2)``, ``date (8)``): the
# registry types that can be read from it (a month as text %m is a date, a year as text is a year,
# a flag stored as text 0/1 is a Table Schema boolean, whose lexical forms are text; a year and
# month is text YYYYMM or a date's month).
READABLE_FROM = {
    "string": {"string", "year", "date", "datetime", "boolean", "yearmonth"},
    "number": {"integer", "number", "boolean", "year"},
    "integer": {"integer", "boolean", "year"},
    "date": {"date", "datetime", "yearmonth"},
    "datetime": {"datetime"},
}

needs_reference = pytest.mark.skipif(
    not (SCHEMA_SNDS.is_dir() and DICO_VARS.is_file()),
    reason=f"SNDS references not found under {REFERENCE}; cannot compare the registry with them.",
)


def _normal(prop: str, value: Any) -> Any:
    """Spellings that mean the same: a default format, no nomenclature ('-'), no constraints."""
    if prop == "format":
        return None if value in (None, "default") else value
    if prop == "nomenclature":
        return None if value in (None, "", "-") else value
    if prop == "constraints":
        return dict(value or {})
    return value


@cache
def _dico() -> dict[tuple[str, str], dict[str, str]]:
    with DICO_VARS.open(encoding="utf-8", newline="") as handle:
        return {(row["table"], row["var"]): row for row in csv.DictReader(handle)}


def _schema_snds(schema: DatasetSchema) -> Mapping[str, Any]:
    """The reference table the dataset names as its source: schema-snds for tables, synthetic-snds for
    the nomenclatures delivered as referentials."""
    source = schema.raw["hdh"]["source"]
    folder = REFERENCE / source["repository"].split("/", 1)[1]
    document = json.loads((folder / source["path"]).read_text(encoding="utf-8"))
    assert document["name"] == schema.name
    return document


def _table_of(nomenclature: str | None) -> str | None:
    """``IR_SEX_V:SEX_COD`` -> ``IR_SEX_V``: dico-snds names the code list without its column."""
    return None if nomenclature is None else nomenclature.split(":", 1)[0]


def reference_differences(registry: DatasetRegistry) -> list[str]:
    """Every difference between the registry's SNDS columns and the references that no override declares."""
    problems = []
    for name in registry.names():
        schema = registry.resolve(name)
        if schema.family != "SNDS":
            continue
        reference = {f["name"]: f for f in _schema_snds(schema)["fields"]}
        # The reference the dataset comes from: schema-snds, or synthetic-snds for code lists.
        origin = schema.raw["hdh"]["source"]["repository"].split("/", 1)[1]
        for declared in schema.raw["fields"]:
            where = f"{schema.name}.{declared['name']}"
            overridden = declared.get(REFERENCE_OVERRIDE_KEY, {}).get("reference", {})
            told = dict(overridden.get(origin, {}))
            # A misspelt name in the reference is declared with the reference's spelling.
            ref = reference.get(told.pop("name", declared["name"]))
            if ref is None:
                problems.append(f"{where}: not a column of the reference's {schema.name}.")
                continue
            for prop in sorted(set(told) - set(COMPARED)):
                problems.append(f"{where}: the override names {prop!r}, which is not compared.")
            for prop in COMPARED:
                mine, theirs = _normal(prop, declared.get(prop)), _normal(prop, ref.get(prop))
                if prop in told:
                    if _normal(prop, told[prop]) != theirs:
                        problems.append(
                            f"{where}: the override says schema-snds's {prop} is {told[prop]!r}; "
                            f"it is {theirs!r}."
                        )
                    elif mine == theirs:
                        problems.append(
                            f"{where}: the override of {prop} is stale, the registry agrees again."
                        )
                elif mine != theirs:
                    problems.append(
                        f"{where}: {prop} is {mine!r} here and {theirs!r} in schema-snds; "
                        f"align it or declare {REFERENCE_OVERRIDE_KEY} with its reason."
                    )
            # dico-snds documents the tables of the SNDS, not the nomenclatures delivered as referentials.
            if schema.raw["hdh"]["source"]["repository"].endswith("/schema-snds"):
                problems += _dico_differences(schema, declared, overridden.get("dico-snds", {}))
    return problems


def _dico_differences(
    schema: DatasetSchema, declared: Mapping[str, Any], told: Mapping[str, Any]
) -> list[str]:
    where = f"{schema.name}.{declared['name']}"
    row = _dico().get((schema.name, declared["name"]))
    if row is None:
        return [f"{where}: not a variable of dico-snds's {schema.name}."]
    problems = []
    storage = row["format"]
    readable = declared["type"] in READABLE_FROM.get(storage.split(" ", 1)[0], set())
    if "format" in told:
        if told["format"] != storage:
            problems.append(
                f"{where}: the override says dico-snds stores it as {told['format']!r}; it is {storage!r}."
            )
        elif readable:
            problems.append(
                f"{where}: the override of dico-snds's format is stale, {declared['type']} fits it."
            )
    elif not readable:
        problems.append(
            f"{where}: a {declared['type']} cannot be read from dico-snds's storage {storage!r}; align it or "
            f"declare {REFERENCE_OVERRIDE_KEY} with its reason."
        )
    mine, theirs = (
        _table_of(_normal("nomenclature", declared.get("nomenclature"))),
        _normal("nomenclature", row["nomenclature"]),
    )
    if mine != theirs:
        problems.append(f"{where}: nomenclature {mine!r} here and {theirs!r} in dico-snds.")
    return problems


@needs_reference
def test_snds_columns_agree_with_the_references_except_declared_overrides() -> None:
    registry = default_registry()
    snds = {n for n in registry.names() if registry.resolve(n).family == "SNDS"}
    assert {"IR_BEN_R", "ER_PRS_F", "ER_PHA_F", "T_MCOaaB", "T_MCOaaC", "T_MCOaaD"} <= snds
    assert reference_differences(registry) == []
    for name in snds:
        schema = registry.resolve(name)
        key = _schema_snds(schema).get("primaryKey", [])
        assert set(schema.primary_key) <= ({key} if isinstance(key, str) else set(key)), name


@needs_reference
def test_no_generator_bound_is_copied() -> None:
    """schema-snds's minimum/maximum bound its synthetic generator; an SNDS column carries none."""
    registry = default_registry()
    copied = [
        f"{name}.{f.name}"
        for name in registry.names()
        if registry.resolve(name).family == "SNDS"
        for f in registry.resolve(name).fields
        if {"minimum", "maximum"} & set(f.constraints)
    ]
    assert copied == [], "write a plausibility warning in expectations/ instead of a bound"


@needs_reference
def test_the_reported_defects_are_declared_overrides() -> None:
    registry = default_registry()
    for table in ("T_MCOaaB", "T_MCOaaC", "T_MCOaaD"):
        schema = registry.resolve(table)
        assert schema.field("ETA_NUM").type == schema.field("RSA_NUM").type == "string", table
    quantity = registry.resolve("ER_PRS_F").field("PRS_ACT_QTE")
    assert quantity.reference_override["reference"]["schema-snds"]["constraints"]["minimum"] == 0
    assert "regularisation" in quantity.reference_override["reason"]
    assert registry.resolve("IR_BEN_R").field("BEN_SEX_COD").nomenclature == "IR_SEX_V:SEX_COD"


@pytest.fixture
def registry_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "datasets"
    shutil.copytree(DATASETS_DIR, folder)
    return folder


def _edit_field(folder: Path, dataset: str, column: str, change) -> None:
    path = folder / f"{dataset}.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    change(next(f for f in document["fields"] if f["name"] == column))
    path.write_text(json.dumps(document), encoding="utf-8")


@needs_reference
@pytest.mark.parametrize(
    ("dataset", "column", "change", "named"),
    [
        ("IR_BEN_R", "BEN_RNG_GEM", lambda f: f.update(type="string"), "type is 'string' here"),
        ("ER_PRS_F", "DPN_QLF", lambda f: f.pop("nomenclature"), "nomenclature None here"),
        ("ER_PHA_F", "PHA_ACT_PRU", lambda f: f.pop(REFERENCE_OVERRIDE_KEY), "constraints is {} here"),
        (
            "T_MCOaaB",
            "ETA_NUM",
            lambda f: f.update(type="integer"),
            "the override of type is stale",
        ),
        (
            "T_MCOaaC",
            "ENT_DAT",
            lambda f: f.update(format="%Y-%m-%d"),
            "format is '%Y-%m-%d' here",
        ),
        (
            "T_MCOaaB",
            "NBR_SEA",
            lambda f: f.update(type="date"),
            "cannot be read from dico-snds's storage 'number (2)'",
        ),
    ],
    ids=["type", "nomenclature", "undeclared dropped bound", "stale override", "format", "dico storage"],
)
def test_an_undeclared_difference_is_named(
    registry_copy: Path, dataset: str, column: str, change, named: str
) -> None:
    _edit_field(registry_copy, dataset, column, change)
    problems = reference_differences(DatasetRegistry.load(registry_copy))
    assert len(problems) >= 1
    assert all(p.startswith(f"{dataset}.{column}: ") for p in problems), problems
    assert any(named in p for p in problems), problems


def test_an_override_without_its_reason_is_refused(registry_copy: Path) -> None:
    _edit_field(registry_copy, "ER_PRS_F", "PRS_ACT_QTE", lambda f: f[REFERENCE_OVERRIDE_KEY].pop("reason"))
    with pytest.raises(RegistryError, match=r"PRS_ACT_QTE.*needs a non-empty reason"):
        DatasetRegistry.load(registry_copy)


def test_an_override_citing_an_unknown_reference_is_refused(registry_copy: Path) -> None:
    _edit_field(
        registry_copy,
        "ER_PRS_F",
        "PRS_ACT_QTE",
        lambda f: f[REFERENCE_OVERRIDE_KEY].update(reference={"my-notes": {"type": "number"}}),
    )
    with pytest.raises(RegistryError, match="schema-snds or dico-snds"):
        DatasetRegistry.load(registry_copy)
