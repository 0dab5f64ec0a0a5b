"""The dataset registry: every schema loads, names resolve, keys and formats are read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hdh_pipelines.registry import (
    REGISTRY_ENV_VAR,
    DatasetRegistry,
    RegistryError,
    default_registry,
)

EXPECTED = {
    "IR_BEN_R", "ER_PRS_F", "ER_PHA_F", "T_MCOaaB", "T_MCOaaC", "T_MCOaaD", "OPT_OUT", "COHORT_EXT",
    "IR_PHA_R", "IR_CIM_V", "FINESS_PMSI_DOUBLONS", "IR_IMB_R",
}  # fmt: skip
DUCKDB_TYPES = {"VARCHAR", "BIGINT", "DOUBLE", "DATE", "TIMESTAMP", "BOOLEAN", "INTEGER"}
DCIR_KEYS = (
    "DCT_ORD_NUM",
    "FLX_DIS_DTD",
    "FLX_EMT_NUM",
    "FLX_EMT_ORD",
    "FLX_EMT_TYP",
    "FLX_TRT_DTD",
    "ORG_CLE_NUM",
    "PRS_ORD_NUM",
    "REM_TYP_AFF",
)


@pytest.fixture(scope="module")
def registry() -> DatasetRegistry:
    return DatasetRegistry.load()


def _write(folder: Path, document: dict) -> None:
    (folder / f"{document['name']}.json").write_text(json.dumps(document))


def _minimal(name: str, **extra: object) -> dict:
    return {
        "name": name,
        "providers": ["cnam"],
        "fields": [{"name": "ID", "type": "string"}, {"name": "DAY", "type": "date"}],
        "primaryKey": ["ID"],
        "hdh": {"family": "TEST", "event_date": "DAY"},
        **extra,
    }


def test_every_schema_loads(registry: DatasetRegistry) -> None:
    assert set(registry.names()) >= EXPECTED
    for name in registry.names():
        schema = registry.resolve(name)
        assert schema is not None and schema.name == name
        assert schema.title and schema.description and schema.family
        assert len(set(schema.column_names)) == len(schema.fields)
        for f in schema.fields:
            assert f.duckdb_type() in DUCKDB_TYPES
            assert f.description, f"{name}.{f.name} has no description"
        assert set(schema.primary_key) <= set(schema.column_names)
        if schema.event_date is not None:
            assert schema.field(schema.event_date).type in {"date", "datetime"}


@pytest.mark.parametrize(
    ("delivered", "expected"),
    [
        ("T_MCO23B", "T_MCOaaB"),
        ("T_MCO24C", "T_MCOaaC"),
        ("T_MCO09D", "T_MCOaaD"),
        ("T_MCOaaB", "T_MCOaaB"),
        ("IR_BEN_R", "IR_BEN_R"),
        ("COHORT_EXT", "COHORT_EXT"),
    ],
)
def test_names_resolve_exactly_or_by_year(registry: DatasetRegistry, delivered: str, expected: str) -> None:
    schema = registry.resolve(delivered)
    assert schema is not None and schema.name == expected


@pytest.mark.parametrize(
    "delivered", ["T_MCO2B", "T_MCO123B", "T_MCOxxB", "T_MCO23BX", "XT_MCO23B", "IR_BEN", ""]
)
def test_unknown_names_do_not_resolve(registry: DatasetRegistry, delivered: str) -> None:
    assert registry.resolve(delivered) is None


def test_fields_carry_types_formats_and_keys(registry: DatasetRegistry) -> None:
    ben = registry.resolve("IR_BEN_R")
    assert ben.primary_key == ("BEN_NIR_PSA", "BEN_RNG_GEM")
    assert ben.person_id == ("BEN_NIR_PSA", "BEN_RNG_GEM")
    assert ben.field("BEN_NIR_PSA").required and ben.field("BEN_NIR_PSA").duckdb_type() == "VARCHAR"
    assert ben.field("BEN_RNG_GEM").duckdb_type() == "BIGINT"
    assert ben.field("BEN_NAI_ANN").duckdb_type() == "INTEGER"
    assert ben.field("BEN_IDT_TOP").duckdb_type() == "BOOLEAN"
    assert not ben.field("BEN_DCD_DTE").required and ben.field("BEN_DCD_DTE").format is None
    with pytest.raises(KeyError):
        ben.field("NOT_A_COLUMN")

    stays = registry.resolve("T_MCO25C")
    assert stays.event_date == "EXE_SOI_DTD"
    assert stays.field("EXE_SOI_DTD").duckdb_type() == "TIMESTAMP"
    assert stays.field("ENT_DAT").format == "%d%m%Y"
    assert {(fk.resource, fk.fields) for fk in stays.foreign_keys} == {
        ("T_MCOaaB", ("ETA_NUM", "RSA_NUM")),
        ("IR_BEN_R", ("NIR_ANO_17",)),
    }

    pharmacy = registry.resolve("ER_PHA_F")
    (to_claims,) = pharmacy.foreign_keys
    assert to_claims.resource == "ER_PRS_F" and to_claims.fields == to_claims.reference_fields == DCIR_KEYS
    assert registry.resolve("ER_PRS_F").primary_key == DCIR_KEYS
    assert registry.resolve("ER_PRS_F").field("PRS_PAI_MNT").duckdb_type() == "DOUBLE"


def test_default_registry_is_loaded_once() -> None:
    assert default_registry() is default_registry()


def test_environment_variable_points_to_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, _minimal("ONLY_ONE"))
    monkeypatch.setenv(REGISTRY_ENV_VAR, str(tmp_path))
    registry = DatasetRegistry.load()
    assert registry.names() == ["ONLY_ONE"]
    assert registry.resolve("ONLY_ONE").field("ID").required


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({**_minimal("BAD"), "fields": [{"name": "ID", "type": "geopoint"}]}, "unsupported type"),
        (_minimal("BAD", primaryKey=["NOPE"]), "undeclared columns"),
        (
            _minimal(
                "BAD", foreignKeys=[{"fields": "ID", "reference": {"resource": "ELSEWHERE", "fields": "ID"}}]
            ),
            "unknown dataset",
        ),
        ({**_minimal("BAD"), "hdh": {}}, "hdh.family"),
        ({**_minimal("BAD"), "name": "OTHER"}, "file name"),
        (
            {**_minimal("BAD"), "hdh": {"family": "TEST", "sentinel_dates": {"31/12/9999": "open end"}}},
            "sentinel_dates",
        ),
    ],
)
def test_unusable_schemas_are_refused(tmp_path: Path, document: dict, message: str) -> None:
    (tmp_path / "BAD.json").write_text(json.dumps(document))
    with pytest.raises(RegistryError, match=message):
        DatasetRegistry.load(tmp_path)


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no dataset schema"):
        DatasetRegistry.load(tmp_path)
