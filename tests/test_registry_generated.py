"""The generated part of the registry: every SNDS table and code list, regenerated to the same bytes.

Reads the references at test time (never copied into the repository); skipped
without them. Column-by-column agreement with the references is
``tests/test_registry_reference.py``'s, which covers generated datasets too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hdh_pipelines.registry import DATASETS_DIR, REFERENCE_COLUMN_KEY, DatasetRegistry, default_registry
from hdh_pipelines.registry.dbt_sources import SOURCES_PATH, sources_yaml
from hdh_pipelines.registry.dbt_staging import GENERATED_DIR, generated_schemas, model_sql, staging_files
from hdh_pipelines.registry.dbt_staging import stale_files as dbt_staging_stale_files
from hdh_pipelines.registry.generate import GENERATED_KEY, GenerationError, generate, stale_files

REFERENCE = Path(__file__).resolve().parents[2] / "shared/reference/snds"
PROJECT = Path(__file__).resolve().parents[1] / "dbt_project"
TABLES = REFERENCE / "schema-snds/schemas"
NOMENCLATURES = REFERENCE / "synthetic-snds/nomenclatures"

needs_reference = pytest.mark.skipif(
    not (TABLES.is_dir() and NOMENCLATURES.is_dir()), reason=f"SNDS references not found under {REFERENCE}."
)


def _names(folder: Path) -> set[str]:
    return {json.loads(p.read_text(encoding="utf-8"))["name"] for p in folder.rglob("*.json")}


@needs_reference
def test_regenerating_gives_the_committed_bytes() -> None:
    generated = generate(REFERENCE)
    differing = sorted(
        name for name, text in generated.items() if (DATASETS_DIR / name).read_text(encoding="utf-8") != text
    )
    assert differing == [], "run: python -m hdh_pipelines.registry.generate"
    assert stale_files(DATASETS_DIR, generated) == []


@needs_reference
def test_every_reference_table_and_code_list_is_registered() -> None:
    registry = default_registry()
    tables, code_lists = _names(TABLES), _names(NOMENCLATURES)
    assert len(tables) == 188 and len(code_lists) == 175
    assert tables | code_lists <= set(registry.names())
    for name in code_lists:
        schema = registry.resolve(name)
        assert schema.primary_key, name
        assert schema.providers == ("cnam",), name


def _curated_documents(folder: Path) -> dict[str, dict]:
    documents = (json.loads(p.read_text(encoding="utf-8")) for p in folder.glob("*.json"))
    return {d["name"]: d for d in documents if GENERATED_KEY not in d}


def _hand_written(document: dict) -> dict[str, dict]:
    return {f["name"]: f for f in document["fields"] if REFERENCE_COLUMN_KEY not in f}


@needs_reference
def test_curated_datasets_are_overlays_on_their_reference_table() -> None:
    """Generation keeps every hand-written column and property, and adds every other reference column."""
    curated = _curated_documents(DATASETS_DIR)
    assert {"IR_BEN_R", "ER_PRS_F", "T_MCOaaB", "IR_PHA_R", "IR_CIM_V"} <= set(curated)
    generated = generate(REFERENCE)
    snds_tables = {p.stem: p for p in TABLES.rglob("*.json")}
    for name, document in curated.items():
        regenerated = json.loads(generated.get(f"{name}.json", json.dumps(document)))
        assert _hand_written(regenerated) == _hand_written(document), name
        assert {k: v for k, v in regenerated.items() if k != "fields"} == {
            k: v for k, v in document.items() if k != "fields"
        }, name
        if name in snds_tables:
            reference = json.loads(snds_tables[name].read_text(encoding="utf-8"))
            names = [f["name"] for f in regenerated["fields"]]
            assert sorted(names) == sorted(f["name"] for f in reference["fields"]), name
            assert names[: len(_hand_written(document))] == list(_hand_written(document)), name
    # The curated columns the SNDS rules read, next to the reference's others.
    stays = {f["name"]: f for f in curated["T_MCOaaB"]["fields"]}
    assert REFERENCE_COLUMN_KEY in stays["TYP_GEN_RSA"] and REFERENCE_COLUMN_KEY not in stays["GHS_NUM"]


@needs_reference
def test_an_overlay_regenerates_reference_columns_and_refuses_invented_ones(tmp_path: Path) -> None:
    folder = tmp_path / "datasets"
    folder.mkdir()
    document = _curated_documents(DATASETS_DIR)["IR_BEN_R"]
    edited = next(f for f in document["fields"] if REFERENCE_COLUMN_KEY in f)
    edited["description"] = "edited by hand without removing the marker"
    (folder / "IR_BEN_R.json").write_text(json.dumps(document), encoding="utf-8")
    regenerated = json.loads(generate(REFERENCE, folder)["IR_BEN_R.json"])
    kept = next(f for f in regenerated["fields"] if f["name"] == edited["name"])
    assert kept["description"] != edited["description"]  # so the bytes test names the file
    document["fields"].append({"name": "NOT_IN_THE_SNDS", "type": "string"})
    (folder / "IR_BEN_R.json").write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(GenerationError, match="IR_BEN_R: hand-written columns NOT_IN_THE_SNDS"):
        generate(REFERENCE, folder)


@pytest.mark.parametrize(
    ("delivered", "family"),
    [
        ("T_MCO23B", "T_MCOaaB"),
        ("T_MCO23BPHN", "T_MCOaaBPHN"),
        ("T_SSR21FA", "T_SSRaaFA"),
        ("T_MCO19GV11", "T_MCOaaGVxx"),
        ("CT_IND_2022_G10", "CT_IND_AAAA_GN"),
        ("CT_DEP_2019_G8", "CT_DEP_AAAA_GN"),
        ("IR_SGN_V", "IR_SGN_V"),  # 'GN' inside a name is not the algorithm version
        ("openbio_ACTE", "openbio_ACTE"),
    ],
)
def test_family_names_resolve(delivered: str, family: str) -> None:
    assert default_registry().resolve(delivered).name == family


@pytest.mark.parametrize("delivered", ["T_MCO2023B", "CT_IND_22_G10", "CT_IND_2022_GX", "T_MCO23GV1"])
def test_near_miss_family_names_do_not_resolve(delivered: str) -> None:
    assert default_registry().resolve(delivered) is None


def test_no_delivered_name_matches_two_families() -> None:
    """Each family's own name with digits in its placeholders resolves to that family and no other."""
    registry = default_registry()
    digits = {"aa": "23", "xx": "11", "AAAA": "2022", "GN": "G10"}
    families = [n for n in registry.names() if re.search(r"aa|xx|_AAAA_|_GN$", n)]
    assert len(families) == 133
    for family in families:
        delivered = re.sub(r"aa|xx|(?<=_)AAAA(?=_)|(?<=_)GN$", lambda m: digits[m.group()], family)
        assert registry.resolve(delivered).name == family, delivered
        assert sum(pattern.fullmatch(delivered) is not None for pattern, _ in registry._templates) == 1


@needs_reference
def test_a_generated_registry_loads_on_its_own(tmp_path: Path) -> None:
    """Generation is self-contained: curated datasets plus generated ones form a loadable registry."""
    folder = tmp_path / "datasets"
    folder.mkdir()
    for path in DATASETS_DIR.glob("*.json"):
        if GENERATED_KEY not in path.read_text(encoding="utf-8"):
            (folder / path.name).write_bytes(path.read_bytes())
    for name, text in generate(REFERENCE, folder).items():
        (folder / name).write_text(text, encoding="utf-8")
    assert DatasetRegistry.load(folder).names() == default_registry().names()


def test_the_dbt_raw_source_is_the_registry() -> None:
    """``_sources.yml`` is generated: regenerating it gives the committed bytes."""
    assert SOURCES_PATH.read_text(encoding="utf-8") == sources_yaml(default_registry()), (
        "run: python -m hdh_pipelines.registry.dbt_sources"
    )


def test_the_generated_staging_is_the_registry() -> None:
    """``models/staging/generated/`` is generated: one model per generated dataset, the committed bytes."""
    registry = default_registry()
    files = staging_files(registry)
    differing = sorted(
        name
        for name, text in files.items()
        if not (GENERATED_DIR / name).is_file() or (GENERATED_DIR / name).read_text(encoding="utf-8") != text
    )
    assert differing == [], "run: python -m hdh_pipelines.registry.dbt_staging"
    assert dbt_staging_stale_files(GENERATED_DIR, files) == [], (
        "run: python -m hdh_pipelines.registry.dbt_staging"
    )
    generated = {s.name for s in generated_schemas(registry)}
    assert generated == {n for n in registry.names() if registry.resolve(n).generated}
    # Hand-written staging stays for the curated datasets: none of them is generated too.
    hand_written = {p.stem for p in (PROJECT / "models/staging").glob("stg_*.sql")}
    assert not hand_written & {f"stg_{n.lower()}" for n in generated}
    assert len(files) == len(generated) + 2  # and the models' docs, and their raw sources


def test_generated_staging_follows_the_registry_types() -> None:
    """Each registry type gets the typing macro of hand-written staging; keys of a family hold per table."""
    registry = default_registry()
    ripc = model_sql(registry.resolve("T_RIPaaC"))
    assert "{{ as_date('ENT_DAT', '%d%m%Y') }} as ent_dat," in ripc
    assert "{{ as_month('ENT_MOI') }} as ent_moi," in ripc
    assert "{{ as_datetime('EXE_SOI_DTD') }} as exe_soi_dtd," in ripc
    assert "{{ as_boolean('NIR_RET') }} as nir_ret," in ripc
    assert "partition by hdh_dataset, eta_num_epmsi, rip_num" in ripc
    dtr = model_sql(registry.resolve("NS_DTR_F"))
    assert "{{ as_date('EXE_SOI_AMD', '%Y%m') }} as exe_soi_amd," in dtr
    assert "{{ as_number('RGO_REM_TAU') }} as rgo_rem_tau," in dtr
    assert "{{ as_string('BEN_RES_DPT') }} as ben_res_dpt," in dtr
    assert "qualify" not in dtr  # no primary key: every delivered row
    atc2 = model_sql(registry.resolve("openmedic_ATC2"))
    assert """{{ as_string('"Libellé ATC2"') }} as libelle_atc2,""" in atc2
    assert "partition by atc2\n" in atc2  # not a family: the key alone
