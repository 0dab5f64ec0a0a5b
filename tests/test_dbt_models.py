"""The dbt normalisation, run for real (`dbt` in a subprocess) on small hand-made raw tables.

One module-scoped `dbt build` of the golden inputs below serves most tests; the
backfill, the empty raw root and the offline docs get their own runs.

The golden population (pseudonyms are 17 characters, as in the SNDS):

- P1 holds two pseudonyms (A and B) under one NIR (BEN_IDT_TOP = 1); IR_BEN_R
  first delivered him wrong, then corrected him in a later delivery.
- Twins T1 and T2 share pseudonym T and differ by rank; twins U1 and U2 too,
  and U2 opted out.
- P4 (C) opted out; P5 holds D and E and opted out under E only; P7 (G) opted
  out and withdrew; P6 (F) has BEN_IDT_TOP = 1 but no NIR.
- Claims flow in February, March and April 2025; stays start in January,
  February and March 2025. COHORT_EXT has no delivery at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import yaml
from dbt_inputs import (
    DBT,
    METFORMIN,
    NIR_P1,
    NIR_P5,
    PARACETAMOL,
    PARTITIONED,
    PROJECT,
    REPO,
    at,
    ben,
    claim,
    in_parallel,
    psa,
    query,
    run_dbt,
    stay_b,
    stay_c,
    write_golden_inputs,
    write_raw,
    write_synthetic_raw,
)

from hdh_pipelines.normalisation.assets import partition_environment
from hdh_pipelines.registry import default_registry

# Enough for twins, opt-outs, several pseudonyms per person and coronary stays to occur.
SYNTHETIC_PERSONS = 1500

# The tables a person who opted out must not reach, with how their rows name a person.
MARTS = ("persons", "claims", "drug_dispensations", "hospital_stays", "hospital_stay_diagnoses")
OMOP = (
    "person",
    "observation_period",
    "visit_occurrence",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
)


@dataclass(frozen=True)
class Build:
    warehouse: Path
    raw_root: Path
    target: Path

    def rows(self, sql: str, parameters=None) -> list[tuple]:
        return query(self.warehouse, sql, parameters)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Build, Build, Build]:
    """`dbt build` (models and data tests) of the golden inputs and, alongside, of a raw root where nothing
    was delivered and of one delivery of the demo's synthetic population."""
    folder = tmp_path_factory.mktemp("dbt")
    golden = Build(folder / "golden.duckdb", folder / "raw", folder / "target")
    empty = Build(folder / "empty.duckdb", folder / "no_raw", folder / "target_empty")
    synthetic = Build(folder / "synthetic.duckdb", folder / "synthetic_raw", folder / "target_synthetic")
    write_golden_inputs(golden.raw_root)
    write_synthetic_raw(synthetic.raw_root, persons=SYNTHETIC_PERSONS, year=2025)
    in_parallel(
        *(
            partial(run_dbt, "build", warehouse=build.warehouse, raw_root=build.raw_root, target=build.target)
            for build in (golden, empty, synthetic)
        )
    )
    return golden, empty, synthetic


@pytest.fixture(scope="module")
def golden(builds) -> Build:
    return builds[0]


def person_of(tag: str, rank: str = "1") -> str:
    return psa(tag) + rank


# --- staging ---------------------------------------------------------------------------------------


def test_sentinel_dates_become_null_and_formats_parse(golden):
    assert golden.rows(
        "select ben_dcd_dte, ben_nai_moi from staging.stg_ir_ben_r where ben_nir_psa = ?", [psa("G")]
    ) == [(None, 3)]
    assert golden.rows("select exe_soi_dtf from staging.stg_er_prs_f where dct_ord_num = 2") == [(None,)]
    assert golden.rows(
        "select exe_soi_dtd, exe_soi_dtf, ent_dat, sor_dat from staging.stg_t_mco_c "
        "where rsa_num = 1000000004"
    ) == [(at("2025-03-12", 9), None, at("2025-03-12").date(), None)]
    assert golden.rows(
        "select exe_soi_dtd, exe_soi_dtf from staging.stg_t_mco_c where rsa_num = 1000000001"
    ) == [(at("2025-01-10", 8), at("2025-01-15", 14))]


def test_latest_delivery_wins(golden):
    # A later load replaces the earlier version of the key; codes are trimmed on the way.
    assert golden.rows(
        "select ben_sex_cod, ben_nai_ann, hdh_delivery_id from staging.stg_ir_ben_r where ben_nir_psa = ?",
        [psa("A")],
    ) == [(1, 1970, "d2")]
    assert golden.rows("select prs_pai_mnt from staging.stg_er_prs_f where dct_ord_num = 1") == [(30.0,)]
    assert golden.rows("select dgn_pal from staging.stg_t_mco_b where rsa_num = 1000000001") == [("I214",)]
    assert golden.rows("select opt_status from staging.stg_opt_out where ben_nir_psa = ?", [psa("G")]) == [
        ("WITHDRAWN",)
    ]
    # Same load time: the greater delivery id wins.
    assert golden.rows(
        "select prs_pai_mnt, hdh_delivery_id from staging.stg_er_prs_f where dct_ord_num = 10"
    ) == [(12.0, "d3b")]
    # Detail rows come from the latest delivery holding rows for their parent, as a set.
    assert golden.rows(
        "select pha_ord_num, pha_act_qsn from staging.stg_er_pha_f where dct_ord_num = 2 order by 1"
    ) == [(1, 2)]
    assert golden.rows("select ass_dgn from staging.stg_t_mco_d where rsa_num = 1000000001 order by 1") == [
        ("E119",),
        ("I10",),
    ]
    assert golden.rows(
        "select pmsi_year, um_ord_num, dgn_pal, dgn_rel, hdh_delivery_id from staging.stg_t_mco_um "
        "where rsa_num = 1000000001 order by 2"
    ) == [(2025, 1, "I214", None, "d2"), (2025, 2, "I500", "E109", "d2"), (2025, 3, "E119", "I500", "d2")]
    assert golden.rows("select count(*) from staging.stg_er_prs_f") == [(10,)]


def test_staging_columns_are_typed_as_the_registry_declares(golden):
    types = {
        "VARCHAR": "string",
        "BIGINT": "integer",
        "DOUBLE": "number",
        "DATE": "date",
        "TIMESTAMP": "datetime",
        "BOOLEAN": "boolean",
        "INTEGER": "year",
    }
    registry = default_registry()
    models = {
        "stg_ir_ben_r": "IR_BEN_R",
        "stg_er_prs_f": "ER_PRS_F",
        "stg_er_pha_f": "ER_PHA_F",
        "stg_t_mco_b": "T_MCOaaB",
        "stg_t_mco_c": "T_MCOaaC",
        "stg_t_mco_d": "T_MCOaaD",
        "stg_t_mco_a": "T_MCOaaA",
        "stg_t_mco_um": "T_MCOaaUM",
        "stg_er_cam_f": "ER_CAM_F",
        "stg_er_ete_f": "ER_ETE_F",
        "stg_opt_out": "OPT_OUT",
        "stg_cohort_ext": "COHORT_EXT",
    }
    for model, dataset in models.items():
        actual = dict(
            golden.rows(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = 'staging' and table_name = ?",
                [model],
            )
        )
        for field in registry.resolve(dataset).own_fields:  # staging types the hand-written columns
            expected = field.type
            if field.format == "%m":
                expected = "year"  # a month alone is kept as its number (INTEGER), like a year
            elif field.name == "RSA_NUM":
                expected = "integer"  # a zero-padded 10-digit index, one integer type in every PMSI table
            elif field.name.endswith("_RET") and field.name not in ("NAI_RET", "DAT_RET"):
                expected = "boolean"  # a chaining return code: true when it is not 0
            assert types[actual[field.name.lower()]] == expected, (model, field.name)


def test_raw_sources_declare_the_registry_columns():
    sources = yaml.safe_load((PROJECT / "models" / "staging" / "_sources.yml").read_text())["sources"][0]
    registry = default_registry()
    lineage = ["hdh_provider", "hdh_delivery_id", "hdh_dataset", "hdh_loaded_at"]
    for table in sources["tables"]:
        schema = registry.resolve(table["identifier"])
        assert table["name"] == schema.name.lower()
        assert [c["name"] for c in table["columns"]] == [*schema.column_names, *lineage]
        assert table["config"]["meta"]["hdh_providers"] == list(schema.providers), table["name"]


def test_dataset_without_delivery_is_empty_and_typed(golden):
    assert golden.rows("select count(*) from staging.stg_cohort_ext") == [(0,)]
    assert ("inc_dte", "DATE") in golden.rows(
        "select column_name, data_type from information_schema.columns where table_name = 'stg_cohort_ext'"
    )


# --- person resolution ------------------------------------------------------------------------------


def test_ben_idt_ano_rule(golden):
    resolved = dict(
        golden.rows(
            "select ben_nir_psa || '/' || ben_rng_gem, ben_idt_ano from intermediate.int_pseudonym_persons"
        )
    )
    assert (
        resolved[psa("A") + "/1"] == resolved[psa("B") + "/1"] == NIR_P1
    )  # top 1: the NIR, across pseudonyms
    assert resolved[psa("T") + "/1"] == person_of("T", "1")  # top 0: pseudonym || rank
    assert resolved[psa("T") + "/2"] == person_of("T", "2")
    assert resolved[psa("F") + "/1"] == person_of("F")  # top 1 without a NIR: the pseudonym
    assert len(resolved) == 11
    assert golden.rows(
        "select pseudonym_count, sex_code, birth_year from intermediate.int_persons where ben_idt_ano = ?",
        [NIR_P1],
    ) == [(2, 1, 1970)]


def test_pmsi_twin_ambiguity_is_flagged_not_guessed(golden):
    stays = {
        rsa: (status, ambiguous, person, candidates)
        for rsa, status, ambiguous, person, candidates in golden.rows(
            "select rsa_num, person_link_status, is_person_ambiguous, ben_idt_ano, candidate_person_count "
            "from intermediate.int_hospital_stays"
        )
    }
    assert stays[1000000002] == ("ambiguous", True, None, 2)
    assert stays[1000000001] == ("linked", False, NIR_P1, 1)
    assert golden.rows(
        "select person_link_status, ben_idt_ano from marts.hospital_stays where rsa_num = 1000000002"
    ) == [("ambiguous", None)]


def test_pharmacy_lines_are_joined_to_their_claims(golden):
    lines = golden.rows(
        "select dct_ord_num, pha_ord_num, has_claim, ben_idt_ano, exe_soi_dtd, atc_code "
        "from intermediate.int_claim_pharmacy_lines order by 1, 2"
    )
    assert lines == [
        (2, 1, True, NIR_P1, at("2025-02-10").date(), PARACETAMOL.atc),
        (3, 1, True, person_of("T", "2"), at("2025-02-12").date(), METFORMIN.atc),
        (4, 1, True, person_of("C"), at("2025-01-20").date(), PARACETAMOL.atc),
        (99, 1, False, None, None, PARACETAMOL.atc),
    ]
    assert golden.rows(
        "select dct_ord_num, cip13, atc_code, boxes from marts.drug_dispensations order by 1"
    ) == [
        (2, PARACETAMOL.cip13, PARACETAMOL.atc, 2),
        (3, METFORMIN.cip13, METFORMIN.atc, 1),
    ]


def test_claims_of_public_hospitals_billing_directly_are_not_countable(golden):
    """ETE_IND_TAA = 1 on the claim's ER_ETE_F line (its latest delivered version) flags the claim; 0, a
    missing indicator and no ER_ETE_F line at all (private practice) flag nothing."""
    assert golden.rows(
        "select dct_ord_num, ete_ind_taa, hdh_delivery_id from staging.stg_er_ete_f order by 1"
    ) == [
        (1, None, "d1"),
        (9, 0, "d2"),
        (10, 1, "d1"),
    ]
    statuses = golden.rows(
        "select dct_ord_num, ete_ind_taa, line_status from intermediate.int_claims "
        "where dct_ord_num in (1, 2, 9, 10) order by 1"
    )
    assert statuses == [
        (1, None, "countable"),
        (2, None, "countable"),
        (9, 0, "countable"),
        (10, 1, "public_t2a"),
    ]
    assert golden.rows("select line_status from marts.claims where dct_ord_num = 10") == [("public_t2a",)]


# --- OMOP ------------------------------------------------------------------------------------------


def test_omop_person(golden):
    persons = {
        source: (gender, year, month)
        for source, gender, year, month in golden.rows(
            "select person_source_value, gender_concept_id, year_of_birth, month_of_birth from omop.person"
        )
    }
    assert persons == {
        NIR_P1: (8507, 1970, 3),
        person_of("T", "1"): (8532, 2010, 7),
        person_of("T", "2"): (8532, 2010, 7),
        person_of("U", "1"): (8507, 2012, 3),
        person_of("F"): (8532, 1990, 3),
        person_of("G"): (8507, 1955, 3),
    }
    assert golden.rows(
        "select count(distinct person_id), min(race_concept_id), max(race_concept_id) from omop.person"
    ) == [(6, 0, 0)]


def test_omop_visits_and_conditions(golden):
    visits = golden.rows(
        "select p.person_source_value, v.visit_concept_id, v.visit_start_date, v.visit_end_date, "
        "v.visit_start_datetime, v.visit_type_concept_id, v.visit_source_value "
        "from omop.visit_occurrence v join omop.person p using (person_id) order by v.visit_start_date"
    )
    assert visits == [
        (NIR_P1, 9201, at("2025-01-10").date(), at("2025-01-15").date(), at("2025-01-10", 8), 32810, "MCO"),
        (NIR_P1, 9202, at("2025-03-12").date(), at("2025-03-12").date(), at("2025-03-12", 9), 32810, "MCO"),
    ]
    conditions = golden.rows(
        "select c.condition_source_value, c.condition_status_source_value, c.condition_status_concept_id, "
        "c.condition_concept_id, c.condition_source_concept_id, c.condition_start_date "
        "from omop.condition_occurrence c join omop.visit_occurrence v using (visit_occurrence_id) "
        "order by c.condition_start_date, c.condition_status_concept_id, c.condition_source_value"
    )
    january, march = at("2025-01-10").date(), at("2025-03-12").date()
    # The units add the codes the stay does not hold, once each (I500: the DP of unit 2 and DR of unit 3), as
    # secondary diagnoses; I214 (unit 1) and E119 (unit 3) repeat the stay's DP and DAS.
    assert conditions == [
        ("I214", "DP", 32902, 0, 0, january),
        ("E109", "DR_UM", 32908, 0, 0, january),
        ("E119", "DAS", 32908, 0, 0, january),
        ("I10", "DAS", 32908, 0, 0, january),
        ("I500", "DP_UM", 32908, 0, 0, january),
        ("Z511", "DP", 32902, 0, 0, march),
        ("C341", "DR", 32908, 0, 0, march),
    ]
    # Every position stays in the marts, the error stay's unit excepted.
    assert golden.rows(
        "select rsa_num, diagnosis_type, diagnosis_rank, icd10_code from marts.hospital_stay_diagnoses "
        "where diagnosis_type in ('DP_UM', 'DR_UM') order by all"
    ) == [
        (1000000001, "DP_UM", 1, "I214"),
        (1000000001, "DP_UM", 2, "I500"),
        (1000000001, "DP_UM", 3, "E119"),
        (1000000001, "DR_UM", 2, "E109"),
        (1000000001, "DR_UM", 3, "I500"),
    ]


def test_omop_procedure_occurrence(golden):
    # The act set of the stay's latest delivery, dated entry + ENT_DAT_DEL, on the stay's visit; the DCIR act
    # of a countable claim; not the error stay's act, the line for information only, nor the orphan line.
    assert golden.rows(
        "select p.person_source_value, o.procedure_source_value, o.procedure_date, o.quantity, "
        "o.modifier_source_value, o.procedure_type_concept_id, v.visit_start_date "
        "from omop.procedure_occurrence o join omop.person p using (person_id) "
        "left join omop.visit_occurrence v using (visit_occurrence_id) order by all"
    ) == [
        (NIR_P1, "DZQM006", at("2025-01-12").date(), 2, "J", 32855, at("2025-01-10").date()),
        (person_of("U"), "DEQP003", at("2025-02-20").date(), 1, None, 32810, None),
    ]


def test_omop_drug_exposure(golden):
    assert golden.rows(
        "select p.person_source_value, d.drug_source_value, d.atc_source_value, d.quantity, "
        "d.drug_concept_id, "
        "d.drug_exposure_start_date, d.drug_exposure_end_date, d.drug_type_concept_id "
        "from omop.drug_exposure d join omop.person p using (person_id) order by d.drug_source_value"
    ) == [
        (
            NIR_P1,
            PARACETAMOL.cip13,
            PARACETAMOL.atc,
            16.0,
            0,
            at("2025-02-10").date(),
            at("2025-04-10").date(),
            32810,
        ),
        (
            person_of("T", "2"),
            METFORMIN.cip13,
            METFORMIN.atc,
            30.0,
            0,
            at("2025-02-12").date(),
            at("2025-03-13").date(),
            32810,
        ),
    ]


def test_omop_observation_period_and_procedures(golden):
    assert golden.rows(
        "select o.observation_period_start_date, o.observation_period_end_date "
        "from omop.observation_period o "
        "join omop.person p using (person_id) where p.person_source_value = ?",
        [NIR_P1],
    ) == [(at("2025-01-10").date(), at("2025-03-12").date())]
    assert ("procedure_date", "DATE") in golden.rows(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = 'omop' and table_name = 'procedure_occurrence'"
    )


ATHENA_CONCEPT_COLUMNS = (
    "concept_id concept_name domain_id vocabulary_id concept_class_id standard_concept concept_code "
    "valid_start_date valid_end_date invalid_reason"
)
ATHENA_RELATIONSHIP_COLUMNS = (
    "concept_id_1 concept_id_2 relationship_id valid_start_date valid_end_date invalid_reason"
)
ATHENA_VOCABULARY_COLUMNS = (
    "vocabulary_id vocabulary_name vocabulary_reference vocabulary_version vocabulary_concept_id"
)


def write_athena_table(path: Path, columns: str, rows: list[tuple]) -> None:
    """A vocabulary file as Athena writes it: tab-separated, header, no quoting, dates as YYYYMMDD."""
    lines = ["\t".join(columns.split())]
    lines += ["\t".join("" if value is None else str(value) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def test_loaded_vocabularies_fill_the_concept_ids(golden, tmp_path):
    athena = tmp_path / "athena"
    athena.mkdir()
    valid = ("19700101", "20991231")
    write_athena_table(
        athena / "CONCEPT.csv",
        ATHENA_CONCEPT_COLUMNS,
        [
            (45000001, "Acute MI", "Condition", "ICD10", "ICD10 code", None, "I21.4", *valid, None),
            (2000001, 'Infarctus "aigu"', "Condition", "CIM10", "ICD10 code", None, "I21.4", *valid, None),
            (45000002, "Type 2 diabetes", "Condition", "ICD10", "ICD10 code", None, "E11.9", *valid, None),
            (45000003, "Hypertension", "Condition", "ICD10", "ICD10 code", None, "I10", *valid, None),
            (4270024, "Acute MI", "Condition", "SNOMED", "Clinical Finding", "S", "57054005", *valid, None),
            (201826, "Type 2 DM", "Condition", "SNOMED", "Clinical Finding", "S", "44054006", *valid, None),
            (999, "Not standard", "Condition", "SNOMED", "Clinical Finding", None, "1", *valid, None),
            (43000001, "Paracetamol 1 g", "Drug", "BDPM", "Drug Product", None, "9900001", *valid, None),
            (1125315, "acetaminophen", "Drug", "RxNorm", "Ingredient", "S", "161", *valid, None),
        ],
    )
    write_athena_table(
        athena / "CONCEPT_RELATIONSHIP.csv",
        ATHENA_RELATIONSHIP_COLUMNS,
        [
            (2000001, 4270024, "Maps to", *valid, None),
            (45000002, 201826, "Maps to", *valid, None),
            (45000002, 999, "Maps to", *valid, None),  # not a standard concept: ignored
            (45000003, 320128, "Maps to", *valid, "D"),  # a deprecated mapping: ignored
            (43000001, 1125315, "Maps to", *valid, None),
        ],
    )
    write_athena_table(
        athena / "VOCABULARY.csv",
        ATHENA_VOCABULARY_COLUMNS,
        [("None", "OMOP Standardized Vocabularies", "OMOP generated", "v5.0 30-AUG-24", 44819096)],
    )
    warehouse = tmp_path / "golden.duckdb"
    shutil.copy(golden.warehouse, warehouse)
    run = partial(run_dbt, warehouse=warehouse, raw_root=golden.raw_root, target=tmp_path / "target")
    run("run-operation", "load_omop_vocabularies", "--args", json.dumps({"folder": str(athena)}))
    run(
        "build",
        "--select",
        "int_omop_concept_map+",
        "omop_cdm_source",
        "--vars",
        json.dumps({"hdh_omop_vocabulary_schema": "vocabulary"}),
    )
    conditions = query(
        warehouse,
        "select condition_source_value, condition_concept_id, condition_source_concept_id "
        "from omop.condition_occurrence order by 1",
    )
    # CIM10 comes before ICD10; a code missing from the vocabularies keeps 0.
    assert conditions == [
        ("C341", 0, 0),
        ("E109", 0, 0),
        ("E119", 201826, 45000002),
        ("I10", 0, 45000003),
        ("I214", 4270024, 2000001),
        ("I500", 0, 0),
        ("Z511", 0, 0),
    ]
    assert query(
        warehouse,
        "select drug_source_value, drug_concept_id, drug_source_concept_id "
        "from omop.drug_exposure order by 1",
    ) == [(PARACETAMOL.cip13, 1125315, 43000001), (METFORMIN.cip13, 0, 0)]
    assert query(warehouse, "select vocabulary_version from omop.cdm_source") == [("v5.0 30-AUG-24",)]


# --- opt-outs --------------------------------------------------------------------------------------


def test_opted_out_persons_are_in_no_mart(golden):
    opted_out_persons = [person_of("C"), NIR_P5, person_of("U", "2")]
    opted_out_pseudonyms = [(psa("C"), 1), (psa("D"), 1), (psa("E"), 1), (psa("U"), 2)]
    assert sorted(
        golden.rows("select ben_nir_psa, ben_rng_gem from intermediate.int_opt_out_exclusions")
    ) == (opted_out_pseudonyms)
    for mart in MARTS:
        assert golden.rows(
            f"select count(*) from marts.{mart} where ben_idt_ano in (select unnest(?))", [opted_out_persons]
        ) == [(0,)], mart
    for mart in ("claims", "drug_dispensations"):
        assert golden.rows(
            f"select count(*) from marts.{mart} "
            "where ben_nir_psa || '/' || ben_rng_gem in (select unnest(?))",
            [[f"{pseudonym}/{rank}" for pseudonym, rank in opted_out_pseudonyms]],
        ) == [(0,)], mart
    # The PMSI has no twin rank: a stay under a pseudonym an opted-out twin holds is left out too
    # (1000000005, an error GHM, is not retained by the SNDS rules anyway).
    assert golden.rows("select rsa_num from marts.hospital_stays order by 1") == [
        (1000000001,),
        (1000000002,),
        (1000000004,),
    ]
    # The other twin's claims stay; P5's claim under the pseudonym he did not opt out with goes.
    assert golden.rows("select dct_ord_num from marts.claims order by 1") == [
        (1,),
        (2,),
        (3,),
        (6,),
        (7,),
        (8,),
        (10,),
    ]
    omop_sources = [source for (source,) in golden.rows("select person_source_value from omop.person")]
    assert not set(omop_sources) & set(opted_out_persons)
    for table in OMOP[1:]:
        assert golden.rows(
            f"select count(*) from omop.{table} where person_id not in (select person_id from omop.person)"
        ) == [(0,)], table
    # A withdrawn opt-out excludes nobody.
    assert golden.rows("select count(*) from marts.persons where ben_idt_ano = ?", [person_of("G")]) == [(1,)]


# --- partitions ------------------------------------------------------------------------------------


def partitioned_rows(warehouse: Path, within=None) -> dict[str, list[tuple]]:
    """Every row of every partitioned model, sorted; ``within`` limits them to a [start, end) range."""
    rows = {}
    for table, column in PARTITIONED.items():
        where = f"where {column} >= '{within[0]}' and {column} < '{within[1]}'" if within else ""
        rows[table] = query(warehouse, f"select * from {table} {where} order by all")
    return rows


def test_backfill_equals_the_months_run_one_by_one(golden, tmp_path):
    months = [("2025-01-01", "2025-02-01"), ("2025-02-01", "2025-03-01"), ("2025-03-01", "2025-04-01")]
    backfill, one_by_one = tmp_path / "backfill.duckdb", tmp_path / "monthly.duckdb"

    def run(warehouse: Path, partitions: list[tuple[str, str]]) -> None:
        for partition in partitions:
            run_dbt(
                "build",
                "--select",
                "+tag:hdh_partitioned",
                "--exclude",
                "resource_type:test",
                warehouse=warehouse,
                raw_root=golden.raw_root,
                target=tmp_path / warehouse.stem,
                partition=partition,
            )

    # The backfill then runs its middle month again: re-running a partition changes nothing.
    in_parallel(
        partial(run, backfill, [(months[0][0], months[-1][1]), months[1]]),
        partial(run, one_by_one, months),
    )
    backfilled = partitioned_rows(backfill)
    assert backfilled == partitioned_rows(one_by_one)
    # Both hold exactly what a whole build holds for those months (April's claims are not there).
    assert backfilled == partitioned_rows(golden.warehouse, within=(months[0][0], months[-1][1]))
    assert all(backfilled.values())
    assert query(backfill, "select max(flx_dis_dtd) from marts.claims") == [(at("2025-03-01").date(),)]


def test_a_whole_build_keeps_rows_of_any_partition_date(tmp_path):
    """SNDS rows can be of any year, and a stay may come without any start date: a whole build keeps
    them all, whatever month a partitioned run would put them in (what dbt's microbatch loses,
    docs/normalisation.md "Why not dbt's microbatch")."""
    raw, warehouse = tmp_path / "raw", tmp_path / "any_date.duckdb"
    write_raw(raw, "IR_BEN_R", [ben("A", "1")])
    flows = ["2006-01-01", "2025-03-01", "2099-12-01"]
    write_raw(
        raw, "ER_PRS_F", [claim(number, flow, "A", "1", flow) for number, flow in enumerate(flows, start=1)]
    )
    stay = stay_c(1000000001, "A", at("2025-03-01"), at("2025-03-04"))
    undated = {**stay, "EXE_SOI_DTD": None, "ENT_DAT": None}
    write_raw(raw, "T_MCO25B", [stay_b(1000000001, "I219")])
    write_raw(raw, "T_MCO25C", [undated])
    models = ["--select", "+marts.claims", "+marts.hospital_stays"]
    run_dbt("run", *models, warehouse=warehouse, raw_root=raw, target=tmp_path)
    claimed = query(warehouse, "select cast(flx_dis_dtd as varchar) from marts.claims order by 1")
    assert claimed == [(flow,) for flow in flows]
    assert query(warehouse, "select stay_start_date from marts.hospital_stays") == [(None,)]


def test_partition_variables_are_checked(golden, tmp_path):
    command = [
        str(DBT),
        "parse",
        "--project-dir",
        str(PROJECT),
        "--profiles-dir",
        str(PROJECT),
        "--target-path",
        str(tmp_path),
    ]
    environment = {
        **os.environ,
        "HDH_WAREHOUSE_PATH": str(tmp_path / "w.duckdb"),
        "HDH_RAW_ROOT": str(tmp_path),
        **partition_environment("2025-01-01", ""),
    }
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "HDH_PARTITION_START and HDH_PARTITION_END go together" in result.stdout


# --- no delivery at all ----------------------------------------------------------------------------


def test_nothing_delivered_still_builds_empty_typed_tables(builds):
    empty = builds[1]
    tables = empty.rows(
        "select schema_name || '.' || table_name from duckdb_tables() "
        "where schema_name in ('staging', 'intermediate', 'marts', 'omop')"
    )
    assert len(tables) == 44
    # Every table is empty but the one row of counts checking the delivered BEN_IDT_ANO, all zero.
    counts = "intermediate.int_ben_idt_ano_conformity"
    assert {table: empty.rows(f"select count(*) from {table}")[0][0] for (table,) in tables} == {
        **dict.fromkeys((table for (table,) in tables), 0),
        counts: 1,
    }
    assert empty.rows(f"select * from {counts}") == [(0, 0, 0)]
    assert empty.rows(
        "select data_type from information_schema.columns where table_name = 'stg_er_prs_f' "
        "and column_name in ('flx_dis_dtd', 'prs_pai_mnt') order by column_name"
    ) == [("DATE",), ("DOUBLE",)]


# --- the demo's synthetic delivery -------------------------------------------------------------------


def test_synthetic_delivery_builds_and_fits_the_partitions(builds):
    """Every model and data test passed on it (the fixture); its events fall in the monthly partitions
    from 2024-12 on: stays of the 2025 PMSI end in 2025 but may start in December 2024, claims reach
    the monthly flows from February 2025 on."""
    synthetic = builds[2]
    bounds = {
        table: synthetic.rows(f"select min({column}), max({column}) from {table}")[0]
        for table, column in PARTITIONED.items()
    }
    # The demo delivers no CCAM act (T_MCOaaA, ER_CAM_F): their models are empty and procedures too; nor
    # establishment lines (ER_ETE_F).
    undelivered = {"staging.stg_er_cam_f", "intermediate.int_claim_ccam_lines", "staging.stg_er_ete_f"}
    assert all(bounds.pop(table) == (None, None) for table in undelivered)
    assert all(low is not None and low >= at("2024-12-01").date() for low, _ in bounds.values()), bounds
    assert bounds["marts.claims"][0] >= at("2025-02-01").date()
    counts = {table: synthetic.rows(f"select count(*) from omop.{table}")[0][0] for table in OMOP}
    assert counts.pop("procedure_occurrence") == 0
    assert all(counts.values()), counts
    statuses = dict(
        synthetic.rows("select person_link_status, count(*) from marts.hospital_stays group by all")
    )
    assert statuses["linked"] > statuses.get("ambiguous", 0)
    assert synthetic.rows("select count(*) from intermediate.int_opt_out_exclusions")[0][0] > 0


# --- documentation ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs(golden) -> Path:
    """`dbt docs generate` on the golden warehouse, without network when the kernel lets us cut it."""
    offline = shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"]).returncode == 0
    run_dbt(
        "docs",
        "generate",
        warehouse=golden.warehouse,
        raw_root=golden.raw_root,
        target=golden.target,
        prefix=("unshare", "-rn") if offline else (),
    )
    return golden.target


def test_docs_generate_works_offline(docs):
    assert (docs / "index.html").stat().st_size > 0
    catalog = json.loads((docs / "catalog.json").read_text())
    assert "model.hdh.omop_drug_exposure" in catalog["nodes"]


def test_every_model_and_column_is_documented(docs):
    manifest = json.loads((docs / "manifest.json").read_text())
    catalog = json.loads((docs / "catalog.json").read_text())
    models = {
        uid: node for uid, node in manifest["nodes"].items() if node["resource_type"] in ("model", "seed")
    }
    assert len(models) == 47
    for uid, node in models.items():
        assert node["description"].strip(), f"{uid} has no description"
        documented = {name.lower(): column["description"] for name, column in node["columns"].items()}
        built = {name.lower() for name in catalog["nodes"][uid]["columns"]}
        assert built == set(documented), (
            f"{uid}: columns built {sorted(built)}, documented {sorted(documented)}"
        )
        undescribed = sorted(name for name, description in documented.items() if not description.strip())
        assert not undescribed, f"{uid}: no description for {undescribed}"
    for uid, source in manifest["sources"].items():
        assert source["description"].strip(), uid
        assert all(column["description"].strip() for column in source["columns"].values()), uid
