"""The dbt project as Dagster assets: continuous lineage, month-range runs as one dbt invocation, and
warehouse writers that queue instead of failing on DuckDB's lock (real dbt, DuckDB and Dagster)."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dbt_inputs import RUN_ASSETS, run_dbt, write_synthetic_raw

from hdh_pipelines.core.partitions import MONTHS
from hdh_pipelines.definitions import defs
from hdh_pipelines.normalisation.assets import MANIFEST_PATH, normalisation_monthly, normalisation_upstream
from hdh_pipelines.normalisation.manifest import PARTIAL_PARSE_FILE
from hdh_pipelines.normalisation.resources import WAREHOUSE_WAIT_MESSAGE, WarehouseResource
from hdh_pipelines.schedules import night_of, nightly_range

REPO = Path(__file__).resolve().parents[1]
RESOURCES = {"dbt": defs.resources["dbt"], "warehouse": defs.resources["warehouse"]}
RANGE_TAGS = {
    "dagster/asset_partition_range_start": "2025-01-01",
    "dagster/asset_partition_range_end": "2025-03-01",
}


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("private") / "raw"
    write_synthetic_raw(root, persons=300, year=2025)
    return root


@pytest.fixture
def warehouse_env(monkeypatch, tmp_path, raw_root) -> Path:
    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("HDH_WAREHOUSE_PATH", str(warehouse))
    monkeypatch.setenv("HDH_RAW_ROOT", str(raw_root))
    return warehouse


def test_lineage_runs_from_raw_tables_to_omop():
    graph = defs.resolve_asset_graph()

    def ancestors(key: str) -> set[str]:
        return {k.to_user_string() for k in graph.upstream_key_iterator(dg.AssetKey.from_user_string(key))}

    assert "raw/ir_ben_r" in ancestors("staging/stg_ir_ben_r")
    assert "raw/er_prs_f" in ancestors("staging/stg_er_prs_f")
    assert "raw/t_mcoaab" in ancestors("staging/stg_t_mco_b")
    node = graph.get(dg.AssetKey(["omop", "omop_person"]))
    assert node.group_name == "omop" and node.owners == ["team:data-engineering"]
    assert "dbt" in node.kinds
    assert graph.get(dg.AssetKey(["marts", "claims"])).partitions_def == MONTHS
    assert normalisation_monthly.backfill_policy == dg.BackfillPolicy.single_run()


def _range_run(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={k for k in normalisation_monthly.keys}
    )
    return job.execute_in_process(instance=instance, tags=RANGE_TAGS, raise_on_error=False)


@pytest.fixture(scope="module")
def upstream_warehouse(tmp_path_factory, raw_root) -> Path:
    """Staging and persons (``normalisation_upstream``) built once; the month tests build on copies."""
    warehouse = tmp_path_factory.mktemp("upstream") / "warehouse.duckdb"
    with pytest.MonkeyPatch.context() as environment, dg.instance_for_test() as instance:
        environment.setenv("HDH_WAREHOUSE_PATH", str(warehouse))
        environment.setenv("HDH_RAW_ROOT", str(raw_root))
        assert dg.materialize([normalisation_upstream], instance=instance, resources=RESOURCES).success
    return warehouse


def _parses_whole(
    partial_parse_file: Path, warehouse: Path, raw_root: Path, target: Path, partition=None
) -> bool:
    """Whether ``dbt parse``, given ``partial_parse_file`` and this warehouse's environment, parses whole."""
    parsed = run_dbt(
        "parse",
        "--partial-parse-file-path",
        str(partial_parse_file),
        warehouse=warehouse,
        raw_root=raw_root,
        target=target,
        partition=partition,
    )
    return "Unable to do partial parsing" in parsed.stdout


def test_the_next_dbt_step_on_a_warehouse_reuses_its_last_parse(upstream_warehouse, raw_root, tmp_path):
    # The upstream step kept its parse beside the warehouse, owner-only (dbt writes the values of the
    # environment variables it reads into it).
    kept = upstream_warehouse.parent / "dbt-partial-parse" / "whole.msgpack"
    assert kept.stat().st_mode & 0o777 == 0o600
    assert kept.parent.stat().st_mode & 0o777 == 0o700
    assert not _parses_whole(kept, upstream_warehouse, raw_root, tmp_path / "kept")
    # The near miss: the code location's parse, made with another profile, makes dbt parse whole.
    code_location_parse = MANIFEST_PATH.with_name(PARTIAL_PARSE_FILE)
    assert _parses_whole(code_location_parse, upstream_warehouse, raw_root, tmp_path / "code-location")


# Five dbt steps, the upstream fixture's included: many minutes on a loaded two-core machine.
@pytest.mark.timeout(1500)
def test_a_three_month_backfill_is_one_dbt_run_equal_to_three_single_months(
    warehouse_env, upstream_warehouse, raw_root, tmp_path
):
    shutil.copyfile(upstream_warehouse, warehouse_env)
    with dg.instance_for_test() as instance:
        result = _range_run(instance)
        assert result.success
        starts = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]
        # One dbt step, one dbt invocation, for the whole range; then the ATC coverage check of the range.
        assert sorted(starts) == ["marts__drug_dispensations_cip13_mapped_to_atc", "normalisation_monthly"]
        months = instance.get_materialized_partitions(dg.AssetKey(["marts", "claims"]))
        assert months == {"2025-01-01", "2025-02-01", "2025-03-01"}
        materialization = instance.get_latest_materialization_event(dg.AssetKey(["marts", "claims"]))
        metadata = materialization.asset_materialization.metadata
        assert metadata["dagster/row_count"].value > 0
        # Column lineage from dagster-dbt, out of the columns dbt logged while it ran.
        care_start = metadata["dagster/column_lineage"].value.deps_by_column["care_start_date"]
        assert care_start == [dg.TableColumnDep(dg.AssetKey(["intermediate", "int_claims"]), "exe_soi_dtd")]
        assert "care_start_date" in {c.name for c in metadata["dagster/column_schema"].value.columns}
    with duckdb.connect(str(warehouse_env), read_only=True) as connection:
        ranged = connection.execute(
            "select * from marts.claims where flx_dis_dtd < date '2025-04-01' order by all"
        ).fetchall()

    # The same upstream state again, then the three months one run each.
    shutil.copyfile(upstream_warehouse, warehouse_env)
    with dg.instance_for_test() as instance:
        for month in ("2025-01-01", "2025-02-01", "2025-03-01"):
            assert dg.materialize(
                [normalisation_monthly],
                instance=instance,
                partition_key=month,
                resources=RESOURCES,
            ).success
    with duckdb.connect(str(warehouse_env), read_only=True) as connection:
        single = connection.execute(
            "select * from marts.claims where flx_dis_dtd < date '2025-04-01' order by all"
        ).fetchall()
    assert ranged and ranged == single
    # The months are environment variables, not dbt vars: the monthly steps' last parse, given another
    # month, is reparsed in part, not thrown away.
    monthly_parse = warehouse_env.parent / "dbt-partial-parse" / "monthly.msgpack"
    next_month = ("2025-04-01", "2025-05-01")
    assert not _parses_whole(monthly_parse, warehouse_env, raw_root, tmp_path / "next", partition=next_month)


def test_two_warehouse_runs_launched_together_both_succeed(warehouse_env, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    environment = {**os.environ, "DAGSTER_HOME": str(home)}
    # Create the instance's storage once, as `dagster dev` or the daemon does before any run: two
    # processes initialising the same fresh SQLite schema race on `create table`.
    with dg.DagsterInstance.from_config(str(home)):
        pass
    selections = [
        ["staging/stg_ir_ben_r", "staging/stg_opt_out", "intermediate/int_pseudonym_persons"],
        ["staging/stg_t_mco_b", "staging/stg_t_mco_c", "staging/stg_t_mco_d", "staging/stg_cohort_ext"],
    ]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RUN_ASSETS, *keys],
            env=environment,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for keys in selections
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-4000:]
    with duckdb.connect(str(warehouse_env), read_only=True) as connection:
        assert connection.execute("select count(*) from staging.stg_ir_ben_r").fetchone()[0] > 0
        assert connection.execute("select count(*) from staging.stg_t_mco_b").fetchone()[0] > 0


_HOLD_THEN_WRITE = """
import logging
import sys
import duckdb
from hdh_pipelines.normalisation.manifest import PARTIAL_PARSE_FILE
from hdh_pipelines.normalisation.resources import WarehouseResource
# Outside a run, Dagster's logger reaches the root one: its lines on stdout, as the run's log would show them.
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
warehouse = WarehouseResource(path=sys.argv[1])
print("asking", flush=True)
with warehouse.exclusive(), duckdb.connect(sys.argv[1]) as connection:
    connection.execute("create or replace table second_writer as select 1 as done")
print("written", flush=True)
"""


def _next_line(process: subprocess.Popen) -> str:
    """The process's next line of output, read byte by byte from the unbuffered pipe (a buffered read
    could take the following line too); fails, rather than hangs, if it does not come within two minutes."""
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, f"the second process wrote no full line after {line!r}"
        byte = process.stdout.read(1)
        assert byte, f"the second process ended after {line!r}"
        line += byte
    return line.decode().strip()


def test_a_step_waits_for_the_warehouse_another_process_holds(tmp_path):
    """What keeps two steps apart when Dagster's pool lets both through: the second waits, then writes."""
    path = tmp_path / "private" / "warehouse.duckdb"
    holder = WarehouseResource(path=str(path))
    with holder.exclusive():
        # As a step of another run would: DuckDB's own lock is held by this process meanwhile.
        connection = duckdb.connect(str(path))
        second = subprocess.Popen(
            [sys.executable, "-c", _HOLD_THEN_WRITE, str(path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
        )
        assert _next_line(second) == "asking"
        # The logged sentence is how the second one says it waits; it cannot go past exclusive() meanwhile.
        assert _next_line(second) == WAREHOUSE_WAIT_MESSAGE
        assert second.poll() is None
        connection.close()
    output = second.communicate(timeout=120)[0].decode()
    assert second.returncode == 0, output
    assert output.strip().endswith("written")
    with duckdb.connect(str(path), read_only=True) as reader:
        assert reader.execute("select done from second_writer").fetchone() == (1,)
    assert (path.parent / "warehouse.duckdb.lock").stat().st_mode & 0o777 == 0o600


def test_the_night_rebuilds_its_recent_months_once():
    assert nightly_range(datetime(2025, 3, 10), 3) == ("2025-01-01", "2025-03-01")
    assert night_of(datetime(2025, 3, 11, 0, 30), 23) == "2025-03-10"


def test_every_exposure_lists_what_its_dagster_asset_reads():
    """The dbt exposures (models/_exposures.yml) and the Dagster assets that read the warehouse agree."""
    manifest = json.loads(MANIFEST_PATH.read_text())
    graph = defs.resolve_asset_graph()
    model_keys = {
        unique_id: dg.AssetKey([node["schema"], node["name"]])
        for unique_id, node in manifest["nodes"].items()
        if node["resource_type"] == "model"
    }
    checked = []
    for exposure in manifest["exposures"].values():
        key = exposure["meta"].get("dagster_asset_key")
        if key is None:
            continue
        read = graph.get(dg.AssetKey.from_user_string(key)).parent_keys & set(model_keys.values())
        assert {model_keys[u] for u in exposure["depends_on"]["nodes"]} == read, exposure["name"]
        checked.append(exposure["name"])
    assert sorted(checked) == [
        "data_challenge",
        "healthdcat_catalogue",
        "open_dispensations",
        "project_workspaces",
    ]
