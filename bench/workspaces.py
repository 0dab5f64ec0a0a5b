"""Workspace benchmark: a full build and a one-month rebuild of one project on a synthetic warehouse.

Not a test: the figures depend on the machine and on what else runs on it.

    python bench/workspaces.py [--persons 200000] [--months 12] [--work DIR]

Builds (in DuckDB SQL) a warehouse with the marts' columns: ``--persons``
persons, one claim and one dispensation per person and month, a stay for one
person in three per month, two diagnoses per stay, an empty opt-out registry.
Then materialises a project approved for persons, claims, drug_dispensations,
hospital_stays and hospital_stay_diagnoses over a predicate selecting about
half the persons:

1. full build of every month (every row pseudonymised with HMAC-SHA-256 in SQL);
2. one person in 1,000 opts out; rebuild of the last month only, the other
   months carried over and re-filtered (the retroactive opt-out);

and prints wall time, rows written, rows per second and the peak RSS of the
process (DuckDB capped at 1 GB). The folder under ``--work`` (default
``bench/work``) is removed at the end, even on failure.
"""

from __future__ import annotations

import argparse
import resource
import secrets
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import duckdb
import yaml

from hdh_pipelines.normalisation.warehouse import DuckDBWarehouse
from hdh_pipelines.workspaces import WorkspaceSettings, materialise_workspace

PROJECT = {
    "id": "bench-project",
    "title": "Benchmark",
    "lead": "Benchmark",
    "regulatory": {
        "controller": "Benchmark organisation",
        "route": "cnil_authorisation",
        "legal_basis": "benchmark",
        "cesrees_opinion": {"number": "CESREES-0", "date": "2026-01-01"},
        "cnil_authorisation": {"number": "DR-0", "date": "2026-01-01"},
        "dpo": {"role": "Data protection officer", "contact": "dpo@bench.example"},
        "retention": {"until": "2099-12-31", "justification": "Benchmark."},
    },
    "purpose": "benchmark",
    "linkage_approved": False,
    "datasets": {
        "persons": ["sex_code", "birth_year"],
        "claims": ["care_start_date", "benefit_nature_code", "amount_reimbursed"],
        "drug_dispensations": ["dispensing_date", "atc_code", "boxes"],
        "hospital_stays": ["stay_start_date", "principal_diagnosis", "length_of_stay_days"],
        "hospital_stay_diagnoses": ["diagnosis_type", "icd10_code"],
    },
    "population": {"predicate": "birth_year < 1965"},
    "study_period": {"start": "2024-01-01", "end": "2025-12-31"},
    "expires_on": "2099-12-31",
    "output_formats": ["parquet", "duckdb"],
}


def build_warehouse(path: Path, persons: int, months: int) -> None:
    person = "'IDT' || lpad(cast(i as varchar), 12, '0')"
    psa = "'PSA' || lpad(cast(i as varchar), 14, '0')"
    claim_key = (
        "i * 100 + m as dct_ord_num, date '2024-01-01' + to_months(m) as flx_dis_dtd, 'E1' as flx_emt_num, "
        "1 as flx_emt_ord, 1 as flx_emt_typ, date '2024-01-05' + to_months(m) as flx_trt_dtd, "
        "'O1' as org_cle_num, 1 as prs_ord_num, 0 as rem_typ_aff"
    )
    grid = f"range(1, {persons + 1}) as p(i), range(0, {months}) as mo(m)"
    with duckdb.connect(str(path)) as db:
        db.execute("set preserve_insertion_order = false")
        for schema in ("marts", "staging", "intermediate"):
            db.execute(f"create schema {schema}")
        db.execute(
            f"""
            create table marts.persons as select {person} as ben_idt_ano, 1 + i % 2 as sex_code,
                1930 + i % 70 as birth_year, 1 + i % 12 as birth_month, null::date as death_date,
                '075' as residence_departement, '056' as residence_commune, 1 as pseudonym_count
            from range(1, {persons + 1}) as p(i);
            create table marts.claims as select {claim_key}, {person} as ben_idt_ano, {psa} as ben_nir_psa,
                1 as ben_rng_gem, date '2024-01-10' + to_months(m) as care_start_date,
                null::date as care_end_date,
                1111 as benefit_nature_code, 1 as practitioner_specialty_code, 1 as quantity,
                25.0 as amount_paid, 25.0 as reimbursement_base, 17.5 as amount_reimbursed,
                0 as expense_qualifier, false as is_for_information_only
            from {grid};
            create table marts.drug_dispensations as select {claim_key}, 1 as pha_ord_num,
                {person} as ben_idt_ano, {psa} as ben_nir_psa, 1 as ben_rng_gem,
                date '2024-01-10' + to_months(m) as dispensing_date, '3400930000000' as cip13,
                'A10BA02' as atc_code, 2 as boxes, 3.2 as unit_price, 3313 as benefit_nature_code,
                false as is_for_information_only
            from {grid};
            create table marts.hospital_stays as select 2024 + m // 12 as pmsi_year, '750000001' as eta_num,
                cast(i * 100 + m as varchar) as rsa_num, {person} as ben_idt_ano, {psa} as nir_ano_17,
                date '2024-01-03' + to_months(m) as stay_start_date, 5 as length_of_stay_days,
                'I214' as principal_diagnosis
            from {grid} where i % 3 = 0;
            create table marts.hospital_stay_diagnoses as select pmsi_year, eta_num, rsa_num,
                kind as diagnosis_type, 1 as diagnosis_rank, 'I214' as icd10_code, stay_start_date,
                ben_idt_ano
            from marts.hospital_stays, (values ('DP'), ('DAS')) as kinds(kind);
            """
        )
    set_opt_outs(path, 0)


def set_opt_outs(path: Path, every: int) -> None:
    selected = f"from range(1, 1000000000, {every}) as p(i)" if every else "from range(0) as p(i)"
    with duckdb.connect(str(path)) as db:
        db.execute(
            f"""
            create or replace table staging.stg_opt_out as select 'PSA' || lpad(cast(i as varchar), 14, '0')
                as ben_nir_psa, 1 as ben_rng_gem, 'ACTIVE' as opt_status, 'cnam' as hdh_provider,
                'oo-{every}' as hdh_delivery_id, now()::timestamp as hdh_loaded_at
            {selected} where i <= (select count(*) from marts.persons);
            create or replace table intermediate.int_opt_out_exclusions as select ben_nir_psa, ben_rng_gem,
                'IDT' || lpad(substr(ben_nir_psa, 4), 12, '0') as ben_idt_ano
            from staging.stg_opt_out;
            """
        )


def timed(settings: WorkspaceSettings, months: list[str], label: str) -> None:
    started = time.perf_counter()
    result = materialise_workspace(
        settings, PROJECT["id"], months, run_id=label, requester="bench", today=date(2026, 11, 29)
    )
    seconds = time.perf_counter() - started
    rows = sum(result.record.row_counts.values())
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{label}: {seconds:.1f} s, {rows:,} rows written ({rows / seconds:,.0f} rows/s), "
        f"population {result.record.population_persons:,}, opted-out removed "
        f"{result.record.opted_out_persons_removed}, extracted "
        f"{len(result.record.months_extracted)} month(s), "
        f"carried over {len(result.record.months_carried_over)}, peak RSS {peak_mib:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=200_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="workspaces-", dir=args.work))
    try:
        warehouse = folder / "warehouse.duckdb"
        started = time.perf_counter()
        build_warehouse(warehouse, args.persons, args.months)
        print(
            f"warehouse: {args.persons:,} persons x {args.months} months "
            f"in {time.perf_counter() - started:.1f} s"
        )
        projects = folder / "projects"
        projects.mkdir()
        (projects / f"{PROJECT['id']}.yaml").write_text(yaml.safe_dump(PROJECT))
        secrets_file = folder / "secrets.yaml"
        secrets_file.write_text(yaml.safe_dump({"projects": {PROJECT["id"]: secrets.token_hex(32)}}))
        secrets_file.chmod(0o600)
        settings = WorkspaceSettings(
            root=folder / "workspaces",
            warehouse=DuckDBWarehouse(warehouse),
            projects_dir=projects,
            audit_root=folder / "audit",
            secrets_file=secrets_file,
        )
        all_months = [f"{2024 + m // 12}-{m % 12 + 1:02d}" for m in range(args.months)]
        timed(settings, all_months, "full build")
        set_opt_outs(warehouse, 1000)
        timed(settings, all_months[-1:], "last month after opt-outs")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
