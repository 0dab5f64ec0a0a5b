"""Project workspaces: every rule of the issue, on a real DuckDB warehouse and a real Dagster instance.

The warehouse is built here by hand with the marts' columns (small tables);
the workspaces are written, read back and scanned file by file.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import secrets
import shutil
import stat
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from hdh_devtools.demo import daemonless
from hdh_pipelines.core.constants import REQUESTER_TAG
from hdh_pipelines.normalisation.resources import WarehouseResource
from hdh_pipelines.normalisation.warehouse import DuckDBWarehouse
from hdh_pipelines.rights.opt_out_purge import workspace_retention_job
from hdh_pipelines.workspaces import (
    HUB_IDENTIFIER_COLUMNS,
    WorkspaceRefused,
    WorkspaceSettings,
    load_project,
    materialise_workspace,
    read_audit_trail,
    scan_registry,
)
from hdh_pipelines.workspaces.assets import project_workspace, workspace_audit_trail
from hdh_pipelines.workspaces.audit import process_requester
from hdh_pipelines.workspaces.partitions import PROJECTS, WORKSPACE_PARTITIONS
from hdh_pipelines.workspaces.pseudonyms import key_variable
from hdh_pipelines.workspaces.purge import published_workspaces, purge_workspace, retention_plan
from hdh_pipelines.workspaces.resources import WorkspaceResource
from hdh_pipelines.workspaces.sensors import project_registry_sensor

REPO = Path(__file__).resolve().parents[1]
SAMPLE_PROJECTS = REPO / "projects"
TODAY = date(2026, 11, 29)
PERSONS = 60
MONTHS_2024_H1 = ["2024-01", "2024-02", "2024-03", "2024-04", "2024-05", "2024-06"]

# ---------------------------------------------------------------- the input warehouse

DCIR_KEY_SQL = """
    cast(100000 + i as bigint) as dct_ord_num, date '2024-01-01' + to_months(m) as flx_dis_dtd,
    '01C' || lpad(cast(i % 7 as varchar), 6, '0') as flx_emt_num, 1 as flx_emt_ord, 1 as flx_emt_typ,
    date '2024-01-05' + to_months(m) as flx_trt_dtd,
    '0' || lpad(cast(i % 9 as varchar), 8, '0') as org_cle_num,
    1 as prs_ord_num, 0 as rem_typ_aff
"""


def hub_id(i: int) -> str:
    return f"IDT{i:06d}ANO{i * 7919 % 100000:05d}"


def build_warehouse(path: Path) -> Path:
    """The marts, opt-out models, cohort and links of the dbt project, as small hand-made tables.

    Persons 1..60; every person has one claim and one dispensation per month
    of 2024-01..2024-06 (ATC A10BA02 for even persons, whom alg_treated_diabetes
    finds); persons divisible by 3 have an I21 stay in each month, with its
    diagnoses, and a cohort record linked to them.
    """
    with duckdb.connect(str(path)) as db:
        for schema in ("marts", "staging", "intermediate", "linkage", "algorithms"):
            db.execute(f"create schema {schema}")
        db.create_function("hub_id", hub_id, ["BIGINT"], "VARCHAR")
        db.execute(
            f"""
            create table marts.persons as
            select hub_id(i) as ben_idt_ano, cast(1 + i % 2 as integer) as sex_code,
                   cast(1940 + i % 50 as integer) as birth_year, cast(1 + i % 12 as integer) as birth_month,
                   case when i % 10 = 0 then date '2025-03-01' end as death_date,
                   lpad(cast(i % 95 + 1 as varchar), 3, '0') as residence_departement,
                   lpad(cast(i % 300 as varchar), 3, '0') as residence_commune, 1 as pseudonym_count
            from range(1, {PERSONS + 1}) as persons(i);

            create table marts.claims as
            select {DCIR_KEY_SQL}, hub_id(i) as ben_idt_ano,
                   'PSA' || lpad(cast(i as varchar), 14, '0') as ben_nir_psa,
                   1 as ben_rng_gem, date '2024-01-10' + to_months(m) as care_start_date,
                   cast(null as date) as care_end_date, 3313 as benefit_nature_code,
                   1 as practitioner_specialty_code, 1 as quantity, 12.5 as amount_paid,
                   10.0 as reimbursement_base, 6.5 as amount_reimbursed, 0 as expense_qualifier,
                   false as is_for_information_only
            from range(1, {PERSONS + 1}) as persons(i), range(0, 6) as months(m);

            create table marts.drug_dispensations as
            select {DCIR_KEY_SQL}, 1 as pha_ord_num, hub_id(i) as ben_idt_ano,
                   'PSA' || lpad(cast(i as varchar), 14, '0') as ben_nir_psa, 1 as ben_rng_gem,
                   date '2024-01-10' + to_months(m) as dispensing_date, '3400930000000' as cip13,
                   case when i % 2 = 0 then 'A10BA02' else 'C10AA05' end as atc_code, 2 as boxes,
                   3.2 as unit_price, 3313 as benefit_nature_code, false as is_for_information_only
            from range(1, {PERSONS + 1}) as persons(i), range(0, 6) as months(m);

            create table marts.hospital_stays as
            select 2024 as pmsi_year, '750000001' as eta_num, cast(i * 100 + m as varchar) as rsa_num,
                   hub_id(i) as ben_idt_ano, 'PSA' || lpad(cast(i as varchar), 14, '0') as nir_ano_17,
                   'linked' as person_link_status, false as is_person_ambiguous, 1 as candidate_person_count,
                   date '2024-01-03' + to_months(m) as stay_start_date,
                   date '2024-01-08' + to_months(m) as stay_end_date,
                   timestamp '2024-01-03 08:00' + to_months(m) as stay_start_datetime,
                   timestamp '2024-01-08 12:00' + to_months(m) as stay_end_datetime,
                   5 as length_of_stay_days, cast(1 + i % 2 as integer) as sex_code, 70 as age_years,
                   cast(null as integer) as age_days, '075' as residence_departement,
                   '75056' as residence_code, 'I214' as principal_diagnosis,
                   cast(null as varchar) as related_diagnosis, 1 as associated_diagnosis_count,
                   '05K051' as ghm_code, 1 as ghs_number, '8' as admission_mode, '5' as admission_origin,
                   '8' as discharge_mode, cast(null as varchar) as discharge_destination,
                   2 as procedure_count, 0 as session_count, false as is_error_stay
            from range(1, {PERSONS + 1}) as persons(i), range(0, 6) as months(m)
            where i % 3 = 0;

            create table marts.hospital_stay_diagnoses as
            select pmsi_year, eta_num, rsa_num, kind as diagnosis_type, 1 as diagnosis_rank,
                   case kind when 'DP' then 'I214' else 'E119' end as icd10_code, stay_start_date,
                   ben_idt_ano, nir_ano_17, person_link_status
            from marts.hospital_stays, (values ('DP'), ('DAS')) as kinds(kind);

            create table staging.stg_cohort_ext as
            select 'REC-' || cast(i as varchar) as coh_rec_id,
                   'PSA' || lpad(cast(i as varchar), 14, '0') as ben_nir_psa,
                   cast(1940 + i % 50 as integer) as nai_ann, cast(1 + i % 12 as integer) as nai_moi,
                   cast(1 + i % 2 as integer) as sex_cod, '75' as res_dpt, '75056' as res_com,
                   date '2024-02-03' as inc_dte, cast(null as date) as dcd_dte, 'I214' as evt_dgn,
                   cast(1 + i % 4 as integer) as evt_killip, 'chu-a' as hdh_provider,
                   'c1' as hdh_delivery_id, 'COHORT_EXT' as hdh_dataset,
                   timestamp '2026-01-05 10:00' as hdh_loaded_at
            from range(1, {PERSONS + 1}) as persons(i) where i % 3 = 0;

            create table linkage.links as
            select hdh_provider, coh_rec_id, hub_id(cast(substr(coh_rec_id, 5) as bigint)) as ben_idt_ano,
                   'deterministic' as method, 1.0 as match_probability
            from staging.stg_cohort_ext;

            create table algorithms.alg_treated_diabetes as
            select ben_idt_ano, 2024 as year, date '2024-01-10' as first_evidence_date
            from marts.persons where cast(substr(ben_idt_ano, 4, 6) as integer) % 2 = 0;

            create table algorithms.alg_treated_dyslipidaemia as
            select ben_idt_ano, 2024 as year, date '2024-01-10' as first_evidence_date
            from marts.persons where cast(substr(ben_idt_ano, 4, 6) as integer) % 4 = 0;
            """
        )
        for table in (
            "stg_ir_ben_r",
            "stg_er_prs_f",
            "stg_er_pha_f",
            "stg_t_mco_b",
            "stg_t_mco_c",
            "stg_t_mco_d",
        ):
            db.execute(
                f"create table staging.{table} as select 'cnam' as hdh_provider, 'd1' as hdh_delivery_id"
            )
    # Person 1 opted out from the start (not in any sample population: nothing else changes).
    set_opt_outs(path, [1], delivery="oo-1")
    return path


def set_opt_outs(warehouse: Path, persons: list[int], delivery: str) -> None:
    """A new delivery of the opt-out registry, as dbt would type and extend it (marts left as they were)."""
    with duckdb.connect(str(warehouse)) as db:
        values = ", ".join(f"({i})" for i in persons) or "(null)"
        db.execute(
            f"""
            create or replace table staging.stg_opt_out as
            select 'PSA' || lpad(cast(i as varchar), 14, '0') as ben_nir_psa, 1 as ben_rng_gem,
                   date '2026-06-01' as opt_out_dte, cast(null as date) as opt_end_dte, 'ALL' as opt_scope,
                   'ACTIVE' as opt_status, 'cnam' as hdh_provider, '{delivery}' as hdh_delivery_id,
                   'OPT_OUT' as hdh_dataset, now()::timestamp as hdh_loaded_at
            from (values {values}) as opted(i) where i is not null;

            create or replace table intermediate.int_opt_out_exclusions as
            select ben_nir_psa, ben_rng_gem,
                   'IDT' || substr(ben_nir_psa, 12, 6) || 'ANO' || lpad(
                       cast(cast(substr(ben_nir_psa, 12, 6) as integer) * 7919 % 100000 as varchar), 5, '0'
                   ) as ben_idt_ano
            from staging.stg_opt_out where opt_status = 'ACTIVE';
            """
        )


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def warehouse_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_warehouse(tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb")


@pytest.fixture
def hub(tmp_path: Path, warehouse_template: Path, monkeypatch: pytest.MonkeyPatch) -> WorkspaceSettings:
    """A private folder with its own warehouse copy, a registry holding the two samples, and their keys."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(warehouse_template, warehouse)
    projects = tmp_path / "projects"
    shutil.copytree(SAMPLE_PROJECTS, projects)
    secrets_file = tmp_path / "workspace-secrets.yaml"
    secrets_file.write_text(yaml.safe_dump({"projects": {"diabetes-drug-use": secrets.token_hex(32)}}))
    secrets_file.chmod(0o600)
    monkeypatch.setenv(key_variable("mi-outcomes-linked"), secrets.token_hex(32))
    return WorkspaceSettings(
        root=tmp_path / "workspaces",
        warehouse=DuckDBWarehouse(warehouse),
        projects_dir=projects,
        audit_root=tmp_path / "audit",
        secrets_file=secrets_file,
    )


def materialise(settings: WorkspaceSettings, project: str, months=MONTHS_2024_H1, run_id: str = "run-1"):
    return materialise_workspace(
        settings, project, months, run_id=run_id, requester="lead@example.org", today=TODAY
    )


def write_project(settings: WorkspaceSettings, project_id: str, **changes) -> Path:
    """A copy of the sample without linkage under another id, with ``changes`` applied."""
    document = yaml.safe_load((SAMPLE_PROJECTS / "diabetes-drug-use.yaml").read_text())
    document.update(id=project_id, **changes)
    path = settings.projects_dir / f"{project_id}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def every_file(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def tables_of(workspace: Path) -> dict[str, list[str]]:
    """Every table of the workspace (each Parquet file and each DuckDB table) -> its column names."""
    tables: dict[str, list[str]] = {}
    with duckdb.connect() as db:
        for path in every_file(workspace):
            if path.suffix == ".parquet":
                # The file's own schema (a reader may add "month" from the folder name; the file has none).
                tables[str(path)] = pq.read_schema(path).names
            elif path.suffix == ".duckdb":
                db.execute(f"attach '{path}' as out (read_only)")
                for (table,) in db.execute(
                    "select table_name from duckdb_tables() where database_name = 'out'"
                ).fetchall():
                    tables[f"{path}:{table}"] = [
                        row[0] for row in db.execute(f"describe out.main.{table}").fetchall()
                    ]
                db.execute("detach out")
    return tables


def values_of(workspace: Path, column: str) -> set[str]:
    with duckdb.connect() as db:
        files = [str(p) for p in every_file(workspace / "parquet")]
        return {
            row[0]
            for row in db.execute(
                f"select distinct {column} from read_parquet($files, union_by_name = true) "
                f"where {column} is not null",
                {"files": files},
            ).fetchall()
        }


def all_text(workspace: Path) -> str:
    return "\n".join(p.read_text() for p in every_file(workspace) if p.suffix in (".md", ".csv", ".json"))


# ---------------------------------------------------------------- the registry


def test_sample_projects_are_valid_one_with_linkage_one_without():
    scan = scan_registry(SAMPLE_PROJECTS)
    assert not scan.refused
    assert {p.id: p.linkage_approved for p in scan.projects.values()} == {
        "mi-outcomes-linked": True,
        "diabetes-drug-use": False,
    }


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"datasets": {"cohort_ext": ["inc_dte"]}}, "datasets", "linkage is not approved"),
        ({"datasets": {"persons": ["sex_code", "ben_idt_ano"]}}, "datasets", "identifier"),
        ({"datasets": {"claims": ["claim_id"]}}, "datasets", "identifier"),
        ({"datasets": {"prescriptions": ["x"]}}, "datasets", "not extractable"),
        ({"study_period": {"start": "2025-01-01", "end": "2024-01-01"}}, "study_period", "before it starts"),
        (
            {"population": {"predicate": "ben_idt_ano in (select * from read_csv('/etc/passwd'))"}},
            "population",
            "table function",
        ),
        (
            {"population": {"predicate": "1 = 1) union all select ben_idt_ano from persons where (1 = 1"}},
            "population",
            "set operation",
        ),
        (
            {"population": {"predicate": "true", "algorithms": ["alg_treated_diabetes"]}},
            "population",
            "not both",
        ),
        ({"expires_on": "soon"}, "expires_on", "date"),
        ({"output_formats": ["duckdb"]}, "output_formats", "parquet"),
        ({"sponsor": "someone"}, "sponsor", "Extra inputs"),
    ],
)
def test_invalid_project_file_is_refused_with_field_and_reason(hub, changes, field, words):
    path = write_project(hub, "broken-project", **changes)
    with pytest.raises(WorkspaceRefused) as refused:
        load_project(path)
    assert refused.value.reason == "invalid_project"
    assert refused.value.field == field
    assert words in refused.value.message
    assert refused.value.project_id == "broken-project"


def test_invalid_or_expired_project_is_refused_and_nothing_is_written(hub):
    write_project(hub, "broken-project", datasets={"persons": ["ben_nir_psa"]})
    write_project(hub, "expired-project", expires_on="2026-01-31")
    for project_id, reason in (("broken-project", "invalid_project"), ("expired-project", "project_expired")):
        with pytest.raises(WorkspaceRefused) as refused:
            materialise(hub, project_id)
        assert refused.value.reason == reason
        assert not (hub.root / project_id).exists()
    assert not hub.root.exists() or not [p for p in hub.root.rglob("*") if p.is_file()]
    trail = read_audit_trail(hub.audit_root)
    assert [(r["project"], r["outcome"], r["reason"]) for r in trail] == [
        ("broken-project", "refused", "invalid_project"),
        ("expired-project", "refused", "project_expired"),
    ]


def test_unknown_project_is_refused_and_audited_without_touching_any_path(hub):
    for project_id in ("never-approved", "../escaped"):
        with pytest.raises(WorkspaceRefused, match="unknown_project"):
            materialise(hub, project_id)
    assert not (hub.root.parent / "escaped").exists()
    trail = read_audit_trail(hub.audit_root)
    assert [(r["project"], r["reason"]) for r in trail] == [
        ("never-approved", "unknown_project"),
        ("../escaped", "unknown_project"),
    ]
    assert all(path.parent == hub.audit_root / "records" for path in hub.audit_root.rglob("*.parquet"))


# ---------------------------------------------------------------- content rules


def test_only_approved_columns_appear_in_any_output(hub):
    for project_id in ("mi-outcomes-linked", "diabetes-drug-use"):
        result = materialise(hub, project_id)
        workspace = hub.root / project_id
        approved = {name: set(columns) for name, columns in result.project.datasets.items()}
        allowed_everywhere = {"person_id", "claim_id", "stay_id"}
        tables = tables_of(workspace)
        assert tables, "the workspace holds data"
        seen = set()
        for location, columns in tables.items():
            dataset = next(name for name in approved if f"/{name}" in location or f":{name}" in location)
            seen.add(dataset)
            unexpected = set(columns) - approved[dataset] - allowed_everywhere
            assert not unexpected, f"{location} holds unapproved {unexpected}"
        assert seen == set(approved)
        if "duckdb" not in result.project.output_formats:
            assert not (workspace / "workspace.duckdb").exists()
        # The dictionary lists exactly the columns in the files, and no document names another column.
        with open(workspace / "data_dictionary.csv") as handle:
            listed = {(row["dataset"], row["column"]) for row in csv.DictReader(handle)}
        assert {c for _, c in listed} - allowed_everywhere <= set().union(*approved.values())
        text = all_text(workspace)
        every_mart_column = _warehouse_columns(hub.warehouse.path)
        never = every_mart_column - set().union(*approved.values()) - allowed_everywhere
        mentioned = {
            column
            for column in never
            if f"`{column}`" in text or f",{column}," in text or f'"{column}"' in text
        }
        assert not mentioned, f"documents name unapproved columns {mentioned}"


def _warehouse_columns(warehouse: Path) -> set[str]:
    with duckdb.connect(str(warehouse), read_only=True) as db:
        return {
            row[0]
            for row in db.execute(
                "select distinct column_name from duckdb_columns() where schema_name in ('marts', 'staging')"
            ).fetchall()
        }


def test_no_hub_identifier_and_different_pseudonyms_in_two_projects(hub):
    # The same approval under two project ids and two keys: same people, nothing in common.
    write_project(hub, "twin-project-a")
    write_project(hub, "twin-project-b")
    for project_id in ("twin-project-a", "twin-project-b"):
        os.environ[key_variable(project_id)] = secrets.token_hex(32)
        materialise(hub, project_id)
    a, b = hub.root / "twin-project-a", hub.root / "twin-project-b"
    for pseudonym in ("person_id", "claim_id"):
        values_a, values_b = values_of(a, pseudonym), values_of(b, pseudonym)
        assert values_a and len(values_a) == len(values_b)
        assert not values_a & values_b
    # No value of any column identifies anyone beyond the project: compare every column pair.
    hub_ids = {hub_id(i) for i in range(1, PERSONS + 1)}
    with duckdb.connect() as db:
        for dataset in ("persons", "claims", "drug_dispensations"):
            glob_a = (
                str(a / "parquet" / f"{dataset}*" / "**" / "*.parquet")
                if dataset != "persons"
                else str(a / "parquet" / "persons.parquet")
            )
            glob_b = glob_a.replace("twin-project-a", "twin-project-b")
            columns = [
                row[0] for row in db.execute(f"describe select * from read_parquet('{glob_a}')").fetchall()
            ]
            assert not set(columns) & HUB_IDENTIFIER_COLUMNS
            for column in columns:
                values = {
                    str(v[0])
                    for v in db.execute(f"select distinct {column} from read_parquet('{glob_a}')").fetchall()
                }
                assert not values & hub_ids
                if column in ("person_id", "claim_id"):
                    shared = db.execute(
                        f"select count(*) from read_parquet('{glob_a}') as x "
                        f"semi join read_parquet('{glob_b}') as y using ({column})"
                    ).fetchone()[0]
                    assert shared == 0
    # The pseudonym is HMAC-SHA-256 with the project's key, over the domain and the hub id.
    key = bytes.fromhex(os.environ.pop(key_variable("twin-project-a")))
    os.environ.pop(key_variable("twin-project-b"))
    expected = hmac.new(key, b"person\x1f" + hub_id(2).encode(), hashlib.sha256).hexdigest()
    assert expected in values_of(a, "person_id")


def test_population_from_a_cohort_targeting_algorithm(hub):
    write_project(hub, "algorithm-project", population={"algorithms": ["alg_treated_dyslipidaemia"]})
    os.environ[key_variable("algorithm-project")] = secrets.token_hex(32)
    try:
        result = materialise(hub, "algorithm-project")
    finally:
        os.environ.pop(key_variable("algorithm-project"))
    assert result.record.population_persons == PERSONS // 4
    write_project(hub, "missing-algorithm", population={"algorithms": ["not_built_yet"]})
    os.environ[key_variable("missing-algorithm")] = secrets.token_hex(32)
    try:
        with pytest.raises(WorkspaceRefused, match="algorithm_not_built"):
            materialise(hub, "missing-algorithm")
    finally:
        os.environ.pop(key_variable("missing-algorithm"))
    assert not (hub.root / "missing-algorithm").exists()


def test_opt_out_removes_a_person_from_every_month_retroactively_and_is_audited(hub):
    project = "diabetes-drug-use"
    materialise(hub, project, MONTHS_2024_H1[:3], run_id="run-q1")
    materialise(hub, project, MONTHS_2024_H1[3:], run_id="run-q2")
    manifest = json.loads((hub.root / project / "manifest.json").read_text())
    assert manifest["months"] == MONTHS_2024_H1 and manifest["months_carried_over"] == MONTHS_2024_H1[:3]

    key = _project_key(hub, project)
    person_4 = hmac.new(key, b"person\x1f" + hub_id(4).encode(), hashlib.sha256).hexdigest()
    assert person_4 in values_of(hub.root / project, "person_id")

    # Person 4 opts out; the next run rebuilds only June, yet January to May lose them too.
    set_opt_outs(hub.warehouse.path, [1, 4], delivery="oo-2")
    result = materialise(hub, project, ["2024-06"], run_id="run-after-opt-out")
    workspace = hub.root / project
    assert person_4 not in values_of(workspace, "person_id")
    assert result.record.months_carried_over == MONTHS_2024_H1[:5]
    with duckdb.connect() as db:
        per_month = db.execute(
            f"select count(distinct person_id) from read_parquet('{workspace}/parquet/claims/*/*.parquet', "
            "hive_partitioning = true) group by month"
        ).fetchall()
    assert {count for (count,) in per_month} == {PERSONS // 2 - 1}

    trail = read_audit_trail(hub.audit_root, project)
    assert [r["run_id"] for r in trail] == ["run-q1", "run-q2", "run-after-opt-out"]
    before, after = trail[1], trail[2]
    assert before["opted_out_persons_removed"] == 0 and after["opted_out_persons_removed"] == 1
    assert before["opt_out_registry_version"]["latest_delivery"] == "cnam/oo-1"
    assert after["opt_out_registry_version"]["latest_delivery"] == "cnam/oo-2"
    assert after["population_persons"] == before["population_persons"] - 1
    assert after["row_counts"]["claims"] == before["row_counts"]["claims"] - 6
    assert after["requester"] == "lead@example.org"
    assert after["approval_references"]["cnil_decision"].startswith("DR-2026-097")


def test_changed_approval_rebuilds_every_month_with_the_new_columns(hub):
    project = "diabetes-drug-use"
    materialise(hub, project, MONTHS_2024_H1[:3], run_id="before-amendment")
    path = hub.projects_dir / f"{project}.yaml"
    document = yaml.safe_load(path.read_text())
    document["datasets"]["claims"] = ["care_start_date"]  # an amendment withdraws two columns
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    result = materialise(hub, project, ["2024-04"], run_id="after-amendment")
    assert result.record.months_extracted == MONTHS_2024_H1[:4]
    assert result.record.months_carried_over == []
    claims_files = list((hub.root / project / "parquet" / "claims").rglob("*.parquet"))
    assert len(claims_files) == 4
    assert {tuple(pq.read_schema(f).names) for f in claims_files} == {
        ("person_id", "claim_id", "care_start_date")
    }


def _project_key(settings: WorkspaceSettings, project: str) -> bytes:
    return bytes.fromhex(yaml.safe_load(settings.secrets_file.read_text())["projects"][project])


def test_linked_cohort_data_only_with_linkage_approval(hub):
    linked = materialise(hub, "mi-outcomes-linked")
    unlinked = materialise(hub, "diabetes-drug-use")
    assert linked.record.row_counts["cohort_ext"] == PERSONS // 3
    cohort_columns = {"inc_dte", "evt_dgn", "evt_killip", "nai_ann", "sex_cod", "res_com"}
    assert not any(
        set(columns) & cohort_columns for columns in tables_of(hub.root / "diabetes-drug-use").values()
    )
    assert "cohort_ext" not in unlinked.manifest["datasets"]
    assert "cohort" not in all_text(hub.root / "diabetes-drug-use").lower()
    # The approval is checked again at run time: a file that asks for linked data without approval is refused.
    write_project(hub, "sneaky-project", datasets={"cohort_ext": ["evt_killip"]})
    with pytest.raises(WorkspaceRefused) as refused:
        materialise(hub, "sneaky-project")
    assert refused.value.field == "datasets" and "linkage is not approved" in refused.value.message
    assert not (hub.root / "sneaky-project").exists()


def test_workspace_and_audit_files_are_owner_only(hub):
    materialise(hub, "mi-outcomes-linked")
    for folder, file_modes in ((hub.root, {0o600}), (hub.audit_root, {0o400})):
        for path in [folder, *folder.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            if path.is_dir():
                assert mode == 0o700, path
            else:
                assert mode in file_modes, (path, oct(mode))


def test_failed_run_leaves_the_previous_workspace_intact(hub):
    project = "mi-outcomes-linked"
    materialise(hub, project, run_id="good-run")
    workspace = hub.root / project
    before = {p.relative_to(workspace): p.read_bytes() for p in every_file(workspace)}
    # The drug dispensations fail when read, after persons and stays were already extracted.
    with duckdb.connect(str(hub.warehouse.path)) as db:
        db.execute("alter table marts.drug_dispensations rename to drug_dispensations_kept")
        db.execute(
            "create view marts.drug_dispensations as select * from marts.drug_dispensations_kept "
            "where error('simulated read failure') is null"
        )
    with pytest.raises(duckdb.Error, match="simulated read failure"):
        materialise(hub, project, run_id="failing-run")
    after = {p.relative_to(workspace): p.read_bytes() for p in every_file(workspace)}
    assert after == before
    assert not [p for p in (hub.root / ".staging").iterdir()], "no staging leftover"
    trail = read_audit_trail(hub.audit_root, project)
    assert [(r["run_id"], r["outcome"]) for r in trail] == [
        ("good-run", "materialised"),
        ("failing-run", "failed"),
    ]
    assert "simulated" not in (trail[-1]["message"] or "")


def test_months_outside_the_study_period_are_refused(hub):
    with pytest.raises(WorkspaceRefused, match="outside_study_period"):
        materialise(hub, "diabetes-drug-use", ["2019-01", "2019-02"])
    assert not (hub.root / "diabetes-drug-use").exists()


def test_key_from_a_group_readable_secrets_file_is_refused(hub):
    hub.secrets_file.chmod(0o640)
    with pytest.raises(WorkspaceRefused, match="exposed_secrets_file"):
        materialise(hub, "diabetes-drug-use")


# ---------------------------------------------------------------- Dagster


def resource_for(settings: WorkspaceSettings) -> WorkspaceResource:
    return WorkspaceResource(
        root=str(settings.root),
        warehouse=WarehouseResource(path=str(settings.warehouse.path)),
        projects_dir=str(settings.projects_dir),
        audit_root=str(settings.audit_root),
        secrets_file=str(settings.secrets_file),
    )


def test_definitions_load_with_the_workspace_assets_and_sensor(hub):
    defs = dg.Definitions(
        assets=[project_workspace, workspace_audit_trail],
        sensors=[project_registry_sensor],
        resources={"workspaces": resource_for(hub)},
    )
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    workspace = graph.get(project_workspace.key)
    assert (
        workspace.group_name == "workspaces" and workspace.backfill_policy == dg.BackfillPolicy.single_run()
    )
    assert {dg.AssetKey(["marts", "persons"]), dg.AssetKey(["linkage", "links"])} <= set(
        workspace.parent_keys
    )


def test_sensor_adds_valid_projects_and_removes_expired_ones(hub, instance):
    write_project(hub, "broken-project", datasets={"persons": ["ben_nir_psa"]})
    resources = {"workspaces": resource_for(hub)}
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = project_registry_sensor(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(PROJECTS.name, list(request.partition_keys))
    assert set(instance.get_dynamic_partitions(PROJECTS.name)) == {"mi-outcomes-linked", "diabetes-drug-use"}

    write_project(hub, "diabetes-drug-use", expires_on="2026-01-31")
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = project_registry_sensor(context)
    (delete,) = result.dynamic_partitions_requests
    assert isinstance(delete, dg.DeleteDynamicPartitionsRequest)
    assert list(delete.partition_keys) == ["diabetes-drug-use"]


def test_dagster_backfill_range_is_one_run_with_audit_and_requester(hub, instance):
    instance.add_dynamic_partitions(PROJECTS.name, ["diabetes-drug-use", "mi-outcomes-linked"])
    start = dg.MultiPartitionKey({"project": "diabetes-drug-use", "month": "2024-01-01"})
    end = dg.MultiPartitionKey({"project": "diabetes-drug-use", "month": "2024-04-01"})
    result = dg.materialize(
        [project_workspace],
        instance=instance,
        resources={"workspaces": resource_for(hub)},
        tags={
            "dagster/asset_partition_range_start": str(start),
            "dagster/asset_partition_range_end": str(end),
            REQUESTER_TAG: "k.benali",
        },
    )
    assert result.success
    manifest = json.loads((hub.root / "diabetes-drug-use" / "manifest.json").read_text())
    assert manifest["months"] == MONTHS_2024_H1[:4] and manifest["run_id"] == result.run_id
    # No person or row count in the event log: it would undo the coarsened count of opt-outs removed.
    for materialization in result.asset_materializations_for_node("workspaces__project_workspace"):
        assert not {"population_persons", "rows"} & set(materialization.metadata)
        assert not [k for k, v in materialization.metadata.items() if isinstance(v.value, int)]
    (record,) = read_audit_trail(hub.audit_root)
    assert (record["run_id"], record["requester"], record["outcome"]) == (
        result.run_id,
        process_requester("k.benali"),  # the OS account, the tag only as a claim
        "materialised",
    )
    materialised = instance.get_materialized_partitions(project_workspace.key)
    assert materialised == {
        str(dg.MultiPartitionKey({"project": "diabetes-drug-use", "month": f"{m}-01"}))
        for m in MONTHS_2024_H1[:4]
    }
    assert (
        WORKSPACE_PARTITIONS.get_partition_key_from_str(str(start)).keys_by_dimension["month"] == "2024-01-01"
    )

    audit = dg.materialize(
        [workspace_audit_trail], instance=instance, resources={"workspaces": resource_for(hub)}
    )
    metadata = audit.asset_materializations_for_node("workspaces__audit_trail")[0].metadata
    assert metadata["dagster/row_count"].value == 1


def test_dagster_refusal_fails_the_run_with_its_reason(hub, instance):
    write_project(hub, "expired-project", expires_on="2026-01-31")
    instance.add_dynamic_partitions(PROJECTS.name, ["expired-project"])
    result = dg.materialize(
        [project_workspace],
        instance=instance,
        resources={"workspaces": resource_for(hub)},
        partition_key=str(dg.MultiPartitionKey({"project": "expired-project", "month": "2024-01-01"})),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data
    assert failure.user_failure_data.metadata["reason"].value == "project_expired"
    assert not (hub.root / "expired-project").exists()


# ---------------------------------------------------------------- opt-out purge and retention


def _person_pseudonym(key: bytes, person: int) -> str:
    return hmac.new(key, b"person\x1f" + hub_id(person).encode(), hashlib.sha256).hexdigest()


def _duckdb_person_ids(workspace: Path) -> set[str]:
    with duckdb.connect() as db:
        db.execute(f"attach '{workspace / 'workspace.duckdb'}' as ws (read_only)")
        tables = [
            r[0]
            for r in db.execute(
                "select table_name from duckdb_tables() where database_name = 'ws'"
            ).fetchall()
        ]
        return {r[0] for t in tables for r in db.execute(f"select person_id from ws.{t}").fetchall()}


def test_purge_removes_a_new_opt_out_from_a_published_workspace_without_a_build(hub):
    project = "mi-outcomes-linked"
    built = materialise(hub, project, run_id="lead-build")
    workspace = hub.root / project
    person_6 = _person_pseudonym(bytes.fromhex(os.environ[key_variable(project)]), 6)
    assert person_6 in values_of(workspace, "person_id") and person_6 in _duckdb_person_ids(workspace)
    dictionary = (workspace / "data_dictionary.csv").read_bytes()

    set_opt_outs(hub.warehouse.path, [1, 6], delivery="oo-2")
    outcome = purge_workspace(hub, project, run_id="purge-1")
    assert (outcome.outcome, outcome.persons_removed) == ("purged", 1)
    # Person 6 had a stay, its diagnoses (DP, DAS) and a dispensation each month, a person row, a cohort row.
    assert outcome.rows_removed == 6 + 12 + 6 + 1 + 1
    assert person_6 not in values_of(workspace, "person_id") | _duckdb_person_ids(workspace)
    assert len(values_of(workspace, "person_id")) == built.record.population_persons - 1
    manifest = json.loads((workspace / "manifest.json").read_text())
    assert (
        manifest["signature"] == built.manifest["signature"]
        and manifest["months"] == built.manifest["months"]
    )
    assert manifest["opt_out_registry_version"]["latest_delivery"] == "cnam/oo-2"
    assert (
        manifest["datasets"]["hospital_stays"]["rows"]
        == built.manifest["datasets"]["hospital_stays"]["rows"] - 6
    )
    assert (workspace / "data_dictionary.csv").read_bytes() == dictionary
    assert "removed 1 time(s)" in (workspace / "README.md").read_text()
    for path in [workspace, *workspace.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path

    # Idempotent: nothing left to remove, nothing rewritten.
    before = {p: p.read_bytes() for p in every_file(workspace)}
    assert purge_workspace(hub, project, run_id="purge-2").outcome == "clean"
    assert {p: p.read_bytes() for p in every_file(workspace)} == before
    # The purge kept the signature: the lead's next build still carries the other months over.
    after = materialise(hub, project, ["2024-06"], run_id="lead-build-2")
    assert after.record.months_carried_over == MONTHS_2024_H1[:5]
    assert person_6 not in values_of(workspace, "person_id")


def test_purge_deletes_a_workspace_whose_key_changed_and_refuses_without_a_key(hub, monkeypatch):
    project = "mi-outcomes-linked"
    materialise(hub, project)
    before = {p: p.read_bytes() for p in every_file(hub.root / project)}
    monkeypatch.delenv(key_variable(project))
    with pytest.raises(WorkspaceRefused, match="missing_project_key"):
        purge_workspace(hub, project, run_id="no-key")
    assert {p: p.read_bytes() for p in every_file(hub.root / project)} == before

    monkeypatch.setenv(key_variable(project), secrets.token_hex(32))
    outcome = purge_workspace(hub, project, run_id="rotated")
    assert (outcome.outcome, outcome.reason) == ("deleted", "key_changed")
    assert not (hub.root / project).exists()
    assert not list((hub.root / ".staging").iterdir())


def test_expired_and_withdrawn_workspaces_are_deleted_by_the_registry_sensor(hub, instance, monkeypatch):
    monkeypatch.setenv(key_variable("withdrawn-project"), secrets.token_hex(32))
    write_project(hub, "withdrawn-project")
    for project in ("mi-outcomes-linked", "diabetes-drug-use", "withdrawn-project"):
        materialise(hub, project)
    write_project(hub, "diabetes-drug-use", expires_on="2026-01-31")
    (hub.projects_dir / "withdrawn-project.yaml").unlink()
    # An invalid file changes nothing: its workspace stays (opt-outs are still purged from it).
    (hub.projects_dir / "mi-outcomes-linked.yaml").write_text("id: [not, valid")

    defs = dg.Definitions(
        jobs=[workspace_retention_job],
        sensors=[project_registry_sensor],
        resources={"workspaces": resource_for(hub)},
    )
    tick = daemonless.tick(defs, instance, "project_registry_sensor")
    (run,) = tick.launched
    assert run.success
    assert published_workspaces(hub.root) == ["mi-outcomes-linked"]
    deleted = {r["project"]: r for r in read_audit_trail(hub.audit_root) if r["outcome"] == "deleted"}
    assert {p: r["reason"] for p, r in deleted.items()} == {
        "diabetes-drug-use": "project_expired",
        "withdrawn-project": "project_withdrawn",
    }
    assert all(r["requester"] == "retention" and r["run_id"] == run.run_id for r in deleted.values())
    assert deleted["diabetes-drug-use"]["row_counts"]["claims"] > 0
    # Nothing left to delete: the next tick launches nothing.
    assert not daemonless.tick(defs, instance, "project_registry_sensor", cursor=tick.cursor).launched


def test_retention_plan_reads_the_registry_not_the_partitions(hub):
    write_project(hub, "broken-project", datasets={"persons": ["ben_nir_psa"]})
    scan = scan_registry(hub.projects_dir)
    published = ["broken-project", "diabetes-drug-use", "gone-project", "mi-outcomes-linked"]
    assert retention_plan(scan, published, date(2030, 1, 1)) == {
        "diabetes-drug-use": "project_expired",
        "gone-project": "project_withdrawn",
        "mi-outcomes-linked": "project_expired",
    }
    assert retention_plan(scan, published, TODAY) == {"gone-project": "project_withdrawn"}
