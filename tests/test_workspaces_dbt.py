"""The two sample projects on a warehouse built by the real dbt project from the demo's synthetic delivery.

Checks that the workspace SQL matches the marts, opt-out models and
algorithms as dbt really builds them (names and types), not only the
hand-made tables of test_workspaces.py. One stand-in: ``linkage.links`` is
made here by joining the cohort's pseudonym to the referential, because the
real linkage needs a Spark session (tests/test_linkage.py covers it); it has
the real table's key and person columns.
"""

from __future__ import annotations

import secrets
from datetime import date
from pathlib import Path

import duckdb
import pytest
from dbt_inputs import run_dbt, write_synthetic_raw

from hdh_pipelines.normalisation.manifest import read_manifest
from hdh_pipelines.normalisation.warehouse import DuckDBWarehouse
from hdh_pipelines.workspaces import (
    HUB_IDENTIFIER_COLUMNS,
    WorkspaceSettings,
    materialise_workspace,
)
from hdh_pipelines.workspaces.pseudonyms import key_variable

REPO = Path(__file__).resolve().parents[1]
SAMPLES = ("mi-outcomes-linked", "diabetes-drug-use")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dbt_workspaces")
    path, raw = folder / "warehouse.duckdb", folder / "raw"
    write_synthetic_raw(raw, persons=3000, year=2025)
    # Seeds and models; the data tests are tests/test_dbt_models.py's concern.
    run_dbt(
        "build", "--exclude-resource-type", "test", warehouse=path, raw_root=raw, target=folder / "target"
    )
    with duckdb.connect(str(path)) as db:
        db.execute(
            """
            create schema linkage;
            create table linkage.links as
            select cohort.hdh_provider, cohort.coh_rec_id, any_value(persons.ben_idt_ano) as ben_idt_ano
            from staging.stg_cohort_ext as cohort
            inner join intermediate.int_pseudonym_persons as persons using (ben_nir_psa)
            group by all having count(distinct persons.ben_idt_ano) = 1
            """
        )
    return path


def test_sample_projects_materialise_on_the_dbt_warehouse(warehouse, tmp_path, monkeypatch):
    for project in SAMPLES:
        monkeypatch.setenv(key_variable(project), secrets.token_hex(32))
    settings = WorkspaceSettings(
        root=tmp_path / "workspaces",
        warehouse=DuckDBWarehouse(warehouse),
        projects_dir=REPO / "projects",
        audit_root=tmp_path / "audit",
        column_descriptions=read_manifest().column_descriptions(),
    )
    months = [f"{year}-{month:02d}" for year in (2024, 2025) for month in range(1, 13)]
    for project in SAMPLES:
        result = materialise_workspace(
            settings, project, months, run_id=f"ci-{project}", requester="ci", today=date(2026, 11, 29)
        )
        counts = result.record.row_counts
        assert result.record.population_persons > 0
        # Every approved dataset has rows, the linked cohort included for the project approved for it.
        assert set(counts) == set(result.project.datasets) and all(counts.values()), counts
        assert result.record.opt_out_registry_version["latest_delivery"] == "cnam/synthetic-1"
        for doc in result.datasets:
            assert not {column.name for column in doc.columns} & HUB_IDENTIFIER_COLUMNS
            # The dictionary's descriptions come from the dbt manifest.
            assert all(column.description for column in doc.columns), doc.name
