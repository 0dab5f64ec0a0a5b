"""An opt-out delivered after the copies exist reaches every copy through the sensor, with nobody asking.

Real parts throughout: raw deliveries written as ingestion writes them, the
real dbt project (first a full ``dbt build``, then the opt-out models
materialised through their Dagster assets, which records the event the
sensor watches), the real linkage asset on a local Spark session, a real
workspace and a real data-challenge export on disk, a real Dagster instance
and the sensor ticked by the daemon-less runner. The population is written
here with the row builders of tests/dbt_inputs.py, not by the demo generator.

Planted truth: person P05 is in the workspace, the challenge export and a
deterministic link when the insurer's second opt-out delivery names them;
after the sensor's run, P05 is in none of them, every other person still is,
and the audit trail holds one purge record per copy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
import yaml
from dagster_pyspark import PySparkResource
from dagster_pyspark.resources import spark_session_from_config
from dbt_inputs import ben, claim, opt_out, psa, run_dbt, write_raw

from hdh_devtools.demo import daemonless
from hdh_pipelines.linkage.assets import LinkageConfig, cohort_linkage
from hdh_pipelines.linkage.resources import LinkageStorageResource
from hdh_pipelines.normalisation.assets import normalisation_upstream
from hdh_pipelines.normalisation.resources import WarehouseResource, dbt_resource
from hdh_pipelines.normalisation.warehouse import DuckDBWarehouse
from hdh_pipelines.open_science import export_challenge
from hdh_pipelines.open_science.resources import OpenScienceResource
from hdh_pipelines.rights.opt_out_purge import opt_out_purge_job
from hdh_pipelines.rights.sensors import opt_out_purge_sensor
from hdh_pipelines.workspaces import materialise_workspace, read_audit_trail
from hdh_pipelines.workspaces.assets import OPT_OUT_EXCLUSIONS_KEY
from hdh_pipelines.workspaces.pseudonyms import key_variable
from hdh_pipelines.workspaces.resources import WorkspaceResource

PROJECT = "optout-propagation"
CHALLENGE = "chal-1"
PERSONS = [f"P{i:02d}" for i in range(1, 31)]
COHORT = PERSONS[:10]
OPTED_OUT = "P05"
MONTHS = ["2025-01", "2025-02", "2025-03"]
OPT_OUT_MODELS = [OPT_OUT_EXCLUSIONS_KEY, dg.AssetKey(["staging", "stg_opt_out"])]


def _person(i: int) -> dict:
    return {"sex": str(1 + i % 2), "year": str(1940 + i), "month": f"{1 + i % 12:02d}"}


def write_population(raw: Path) -> None:
    """30 persons with one claim a month in 2025-01..03; a hospital cohort naming the first ten."""
    people = {tag: _person(i) for i, tag in enumerate(PERSONS, start=1)}
    write_raw(raw, "IR_BEN_R", [ben(tag, "1", **people[tag]) for tag in PERSONS])
    write_raw(
        raw,
        "ER_PRS_F",
        [
            claim(100 * i + m, f"2025-{m + 1:02d}-01", tag, "1", f"2025-{m:02d}-15")
            for i, tag in enumerate(PERSONS, start=1)
            for m in (1, 2, 3)
        ],
    )
    write_raw(
        raw,
        "COHORT_EXT",
        [
            {
                "COH_REC_ID": f"R-{tag}",
                "BEN_NIR_PSA": psa(tag),
                "NAI_ANN": people[tag]["year"],
                "NAI_MOI": str(int(people[tag]["month"])),
                "SEX_COD": people[tag]["sex"],
                "RES_DPT": "75",
                "RES_COM": "75056",
                "INC_DTE": "2025-02-10",
                "DCD_DTE": None,
                "EVT_DGN": "I210",
                "EVT_KILLIP": "1",
            }
            for tag in COHORT
        ],
        provider="chu-cohort",
        delivery_id="c1",
    )
    # A first registry delivery naming someone else: the registry exists before P05 opts out.
    write_raw(raw, "OPT_OUT", [opt_out("P30", "1", "2024-06-01")], delivery_id="oo-1")


def write_project(projects: Path) -> None:
    projects.mkdir()
    document = {
        "id": PROJECT,
        "title": "Opt-out propagation test project",
        "lead": "Test lead",
        "regulatory": {
            "controller": "Test research organisation",
            "route": "cnil_authorisation",
            "legal_basis": "GDPR art. 6.1.e and 9.2.j",
            "cesrees_opinion": {"number": "CESREES-TEST-1", "date": "2026-01-02"},
            "cnil_authorisation": {"number": "DR-TEST-1", "date": "2026-02-03"},
            "dpo": {"role": "Data protection officer", "contact": "dpo@test.example"},
            "retention": {"until": "2099-12-31", "justification": "Test retention."},
        },
        "purpose": "Check that opt-outs reach every copy.",
        "linkage_approved": True,
        "datasets": {
            "persons": ["sex_code", "birth_year"],
            "claims": ["care_start_date", "amount_paid"],
            "cohort_ext": ["inc_dte", "evt_dgn"],
        },
        "population": {"predicate": "persons.birth_year > 1900"},
        "study_period": {"start": "2025-01-01", "end": "2025-12-31"},
        "expires_on": "2099-12-31",
        "output_formats": ["parquet", "duckdb"],
    }
    (projects / f"{PROJECT}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


@dataclass(frozen=True)
class World:
    root: Path
    raw: Path
    warehouse: Path
    workspaces: WorkspaceResource
    open_science: OpenScienceResource
    linkage: LinkageStorageResource
    project_key: bytes
    challenge_key: bytes

    def hub_id(self, tag: str) -> str:
        # int_pseudonym_persons: no own NIR, so the person is BEN_NIR_PSA || BEN_RNG_GEM.
        return psa(tag) + "1"

    def pseudonym(self, key: bytes, tag: str) -> str:
        return hmac.new(key, b"person\x1f" + self.hub_id(tag).encode(), hashlib.sha256).hexdigest()

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.warehouse), read_only=True) as connection:
            return connection.execute(sql).fetchall()


def workspace_person_ids(world: World) -> set[str]:
    folder = Path(world.workspaces.root) / PROJECT
    with duckdb.connect() as connection:
        ids = {
            row[0]
            for row in connection.execute(
                f"select person_id from read_parquet('{folder}/parquet/**/*.parquet', union_by_name = true, "
                "hive_partitioning = false)"
            ).fetchall()
        }
        connection.execute(f"attach '{folder / 'workspace.duckdb'}' as ws (read_only)")
        for table in ("persons", "claims", "cohort_ext"):
            ids |= {row[0] for row in connection.execute(f"select person_id from ws.{table}").fetchall()}
    return ids


def challenge_person_ids(world: World) -> set[str]:
    folder = Path(world.open_science.challenge_root) / CHALLENGE
    with duckdb.connect() as connection:
        return {
            row[0]
            for row in connection.execute(
                f"select person_id from read_parquet(['{folder}/train.parquet', '{folder}/test.parquet'])"
            ).fetchall()
        }


def linkage_rows(world: World) -> dict[str, set[str]]:
    """Each output's (record or person) values: links by person, all three by cohort record."""
    return {
        "linked_persons": {r[0] for r in world.query("select ben_idt_ano from linkage.links")},
        "records": {
            r[0]
            for r in world.query(
                "select coh_rec_id from linkage.links union all select coh_rec_id from linkage.unlinked "
                "union all select coh_rec_id from linkage.ambiguous"
            )
        },
    }


@pytest.fixture(scope="module")
def spark_resource(linkage_spark_config: dict[str, Any]) -> PySparkResource:
    resource = PySparkResource(spark_config=linkage_spark_config)
    spark_session_from_config(resource.spark_config).sparkContext.setLogLevel("ERROR")
    return resource


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("optout")
    raw, warehouse = root / "raw", root / "warehouse.duckdb"
    write_population(raw)
    write_project(root / "projects")
    # What the copies read, and its models' ancestors (the registry included); not OMOP or the algorithms.
    run_dbt(
        "build",
        "--select",
        "+persons +claims +stg_cohort_ext",
        "--exclude-resource-type",
        "test",
        warehouse=warehouse,
        raw_root=raw,
        target=root / "target",
    )
    project_key, challenge_key = secrets.token_bytes(32), secrets.token_bytes(32)
    with pytest.MonkeyPatch.context() as patch:
        # The dbt assets read these, as in production (definitions.py).
        patch.setenv("HDH_WAREHOUSE_PATH", str(warehouse))
        patch.setenv("HDH_RAW_ROOT", str(raw))
        patch.setenv(key_variable(PROJECT), project_key.hex())
        yield World(
            root=root,
            raw=raw,
            warehouse=warehouse,
            workspaces=WorkspaceResource(
                root=str(root / "workspaces"),
                warehouse=WarehouseResource(path=str(warehouse)),
                projects_dir=str(root / "projects"),
                audit_root=str(root / "audit"),
            ),
            open_science=OpenScienceResource(
                indicator_root=str(root / "indicators"),
                request_log=str(root / "indicators.log"),
                public_root=str(root / "public"),
                challenge_root=str(root / "challenges"),
                challenge_key=challenge_key.hex(),
            ),
            linkage=LinkageStorageResource(
                warehouse=WarehouseResource(path=str(warehouse)), linkage_root=str(root / "linkage")
            ),
            project_key=project_key,
            challenge_key=challenge_key,
        )


# Two dbt runs and a Spark linkage: a few minutes on a busy two-core machine.
@pytest.mark.timeout(1200)
def test_an_opt_out_reaches_every_copy_through_the_sensor(world: World, spark_resource, tmp_path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        # The three copies, made before P05 opts out.
        linkage = dg.materialize(
            [cohort_linkage],
            instance=instance,
            resources={"spark": spark_resource, "linkage_storage": world.linkage},
            run_config=dg.RunConfig({"cohort_linkage": LinkageConfig()}),
        )
        assert linkage.success
        materialise_workspace(
            world.workspaces.settings(),
            PROJECT,
            MONTHS,
            run_id="lead-build",
            requester="lead",
            today=date.today(),
        )
        export_challenge(
            DuckDBWarehouse(world.warehouse),
            "persons",
            world.challenge_key,
            Path(world.open_science.challenge_root),
            CHALLENGE,
            test_fraction=0.3,
            now=datetime.now().astimezone(),
            mart_descriptions={},
        )
        target_in_workspace = world.pseudonym(world.project_key, OPTED_OUT)
        target_in_challenge = world.pseudonym(world.challenge_key, OPTED_OUT)
        workspace_before = workspace_person_ids(world)
        challenge_before = challenge_person_ids(world)
        linkage_before = linkage_rows(world)
        assert target_in_workspace in workspace_before and len(workspace_before) == 29
        assert target_in_challenge in challenge_before and len(challenge_before) == 29
        assert world.hub_id(OPTED_OUT) in linkage_before["linked_persons"]
        assert f"R-{OPTED_OUT}" in linkage_before["records"]

        defs = dg.Definitions(
            jobs=[opt_out_purge_job],
            sensors=[opt_out_purge_sensor],
            resources={
                "workspaces": world.workspaces,
                "open_science": world.open_science,
                "linkage_storage": world.linkage,
            },
        )
        # Nothing has materialised the registry in this instance yet: the sensor waits.
        first = daemonless.tick(defs, instance, "opt_out_purge_sensor")
        assert first.skip_reason and not first.launched

        # The insurer delivers P05's opt-out; the nightly rebuilds the opt-out models (real dbt, via Dagster).
        write_raw(
            world.raw,
            "OPT_OUT",
            [opt_out(OPTED_OUT, "1", "2026-11-30")],
            delivery_id="oo-2",
            loaded_at=datetime(2026, 12, 1, 2, 0),
        )
        rebuilt = dg.materialize(
            [normalisation_upstream],
            instance=instance,
            selection=OPT_OUT_MODELS,
            resources={"dbt": dbt_resource(), "warehouse": WarehouseResource(path=str(world.warehouse))},
        )
        assert rebuilt.success
        assert world.query(
            f"select count(*) from intermediate.int_opt_out_exclusions where ben_nir_psa = '{psa(OPTED_OUT)}'"
        ) == [(1,)]

        tick = daemonless.tick(defs, instance, "opt_out_purge_sensor", cursor=first.cursor)
        (run,) = tick.launched
        assert run.success, [e.message for e in run.all_events if e.is_failure]

        # P05 is in no copy; everyone else still is.
        assert workspace_person_ids(world) == workspace_before - {target_in_workspace}
        assert challenge_person_ids(world) == challenge_before - {target_in_challenge}
        linkage_after = linkage_rows(world)
        assert linkage_after["linked_persons"] == linkage_before["linked_persons"] - {world.hub_id(OPTED_OUT)}
        assert linkage_after["records"] == linkage_before["records"] - {f"R-{OPTED_OUT}"}
        manifest = json.loads((Path(world.workspaces.root) / PROJECT / "manifest.json").read_text())
        assert manifest["opt_out_registry_version"]["latest_delivery"] == "cnam/oo-2"
        assert manifest["opt_out_purges"][-1]["run_id"] == run.run_id

        # The audit trail records each purge, by the sensor's run.
        purges = {
            r["project"]: r
            for r in read_audit_trail(Path(world.workspaces.audit_root))
            if r["outcome"] == "purged"
        }
        assert set(purges) == {PROJECT, f"challenge/{CHALLENGE}", "linkage"}
        for record in purges.values():
            assert record["run_id"] == run.run_id and record["requester"] == "opt-out-purge"
            assert record["opted_out_persons_removed"] >= 1
            assert record["opt_out_registry_version"]["latest_delivery"] == "cnam/oo-2"
        # 30 persons, P30 opted out from the start, P05 now: 28 left, three claims each.
        assert purges[PROJECT]["row_counts"]["claims"] == 28 * 3

        # No new registry version: no run. A reset cursor requests the same run key: nothing twice.
        assert not daemonless.tick(defs, instance, "opt_out_purge_sensor", cursor=tick.cursor).launched
        reset = daemonless.tick(defs, instance, "opt_out_purge_sensor")
        assert reset.duplicates == 1 and not reset.launched

        # Idempotent: purging again rewrites nothing and records nothing.
        files_before = {p: p.stat().st_mtime_ns for p in (Path(world.workspaces.root) / PROJECT).rglob("*")}
        trail_size = len(read_audit_trail(Path(world.workspaces.audit_root)))
        again = opt_out_purge_job.execute_in_process(instance=instance, resources=defs.resources)
        assert again.success
        assert {
            p: p.stat().st_mtime_ns for p in (Path(world.workspaces.root) / PROJECT).rglob("*")
        } == files_before
        assert len(read_audit_trail(Path(world.workspaces.audit_root))) == trail_size
