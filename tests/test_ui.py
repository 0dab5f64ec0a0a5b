"""The Dagster UI as a project lead uses it: a real `dagster dev` (webserver and daemon) on the repository's
`workspace.yaml`, a workspace backfill launched through its GraphQL API, and the asset graph opened in
headless Chromium (the OS package).

Inputs are real: the synthetic SNDS delivery as raw Parquet, a warehouse built by `dbt build`, the
repository's `dagster.yaml` in a temporary DAGSTER_HOME. Nothing here needs SFTP, so the SFTP settings point
at a closed loopback port (the inbox sensor's ticks skip).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dbt_inputs import run_dbt, write_synthetic_raw
from ui_support import (
    ARTIFACTS,
    CHROMIUM,
    COMMUNITY_PROMPT_SEEN,
    GRAPH_NODE_NAMES,
    PROJECT,
    DagsterDev,
    chromium_page,
    dagster_dev,
    hub_environment,
)

from hdh_pipelines.workspaces import read_audit_trail
from hdh_pipelines.workspaces.audit import process_requester

REPO = Path(__file__).resolve().parents[1]
MONTHS = ["2025-01-01", "2025-02-01", "2025-03-01"]
REQUESTER = "ui-test-lead"
# The hub's lifecycle stages, as asset groups: the code location must define them and the graph show them.
LIFECYCLE_GROUPS = {"raw", "ingestion", "normalisation", "marts", "omop", "catalogue", "workspaces"}


# The dbt models diabetes-drug-use's workspace reads, with everything upstream of them.
WORKSPACE_INPUTS = (
    "+persons",
    "+claims",
    "+drug_dispensations",
    "+alg_treated_diabetes",
    "+int_opt_out_exclusions",
)
# The module fixture (a dbt build and a whole `dagster dev`) counts in the first test's time: minutes on a
# loaded two-core machine.
pytestmark = pytest.mark.timeout(1200)


@dataclass(frozen=True)
class Hub:
    ui: DagsterDev
    workspace_root: Path
    audit_root: Path


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """`dagster dev` on a Dagster home with the project's partition, and raw data plus a dbt-built warehouse
    (prepared while the code location loads: the code location reads neither)."""
    folder = tmp_path_factory.mktemp("ui")
    environment = hub_environment(folder)
    home = Path(environment["DAGSTER_HOME"])
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    # What project_registry_sensor does on its first tick, done first so the test does not wait for it (and
    # before `dagster dev` opens the instance's storage, so the two never create it at the same time).
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("projects", [PROJECT])
    with dagster_dev(environment, folder / "dagster-dev.log") as ui:
        private = Path(environment["HDH_PRIVATE_ROOT"])
        private.mkdir(mode=0o700)
        raw_root = Path(environment["HDH_RAW_ROOT"])
        write_synthetic_raw(raw_root, persons=300, year=2025)
        # What the project's workspace reads (its marts, its algorithm, the opt-out exclusions) and what
        # they are built from; seeds and models only: the data tests are tests/test_dbt_models.py's concern.
        run_dbt(
            "build",
            "--select",
            *WORKSPACE_INPUTS,
            "--exclude-resource-type",
            "test",
            warehouse=Path(environment["HDH_WAREHOUSE_PATH"]),
            raw_root=raw_root,
            target=folder / "dbt_target",
        )
        ui.wait_until_loaded()
        yield Hub(
            ui=ui,
            workspace_root=Path(environment["HDH_WORKSPACE_ROOT"]),
            audit_root=Path(environment["HDH_WORKSPACE_AUDIT_ROOT"]),
        )


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""

BACKFILL_STATUS = """
query($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      status
      error { message }
      runs { runId status tags { key value } }
    }
    ... on PythonError { message }
  }
}
"""

FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
FAILED_BACKFILL = {"FAILED", "FAILING", "COMPLETED_FAILED", "CANCELED", "CANCELING"}


def _wait_for_backfill_runs(ui: DagsterDev, backfill_id: str, timeout_seconds: float = 480) -> dict:
    """The backfill once it has launched its runs and they have all finished (or once it failed).

    The daemon marks the backfill itself complete on its next pass (up to 30 s later): the runs are what
    the lead waits for. The deadline is only a backstop (a run takes minutes on a loaded two-core machine):
    the wait ends as soon as the runs have.
    """

    def settled() -> dict | None:
        backfill = ui.graphql(BACKFILL_STATUS, {"backfillId": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        runs = backfill["runs"]
        finished = bool(runs) and all(run["status"] in FINISHED_RUN for run in runs)
        return backfill if finished or backfill["status"] in FAILED_BACKFILL else None

    return ui.wait_until(settled, f"backfill {backfill_id} finished its runs", timeout_seconds)


def test_a_lead_backfills_three_months_of_a_workspace_in_one_run(hub: Hub):
    partitions = [f"{month}|{PROJECT}" for month in MONTHS]
    launched = hub.ui.graphql(
        LAUNCH_BACKFILL,
        {
            "params": {
                "assetSelection": [{"path": ["workspaces", "project_workspace"]}],
                "partitionNames": partitions,
                "tags": [{"key": "hdh/requester", "value": REQUESTER}],
                "title": f"{PROJECT} {MONTHS[0][:7]}..{MONTHS[-1][:7]}",
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched

    backfill = _wait_for_backfill_runs(hub.ui, launched["backfillId"])

    runs = backfill["runs"]
    assert backfill["status"] not in FAILED_BACKFILL, (backfill, hub.ui.log_tail())
    # BackfillPolicy.single_run(): the three months are one run, tagged with the whole range.
    assert len(runs) == 1, runs
    (run,) = runs
    assert run["status"] == "SUCCESS", hub.ui.log_tail()
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert tags["hdh/requester"] == REQUESTER
    assert tags["dagster/asset_partition_range_start"] == partitions[0]
    assert tags["dagster/asset_partition_range_end"] == partitions[-1]

    workspace = hub.workspace_root / PROJECT
    assert workspace.is_dir() and workspace.stat().st_mode & 0o077 == 0  # owner-only
    assert list(workspace.rglob("*.parquet"))
    audited = [r for r in read_audit_trail(hub.audit_root, PROJECT) if r["run_id"] == run["runId"]]
    # The audit records the authenticated identity (the run's OS account) and the lead's claim beside it.
    assert [(r["outcome"], r["requester"]) for r in audited] == [
        ("materialised", process_requester(REQUESTER))
    ]


# Groups of the assets the code location defines; a dependency it does not define (a stub, neither
# materialisable nor observable, which Dagster files under "default") is not a lifecycle stage.
ASSET_GROUPS = """
{
  assetNodes { groupName isMaterializable isObservable }
}
"""


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install -y chromium")
def test_the_asset_graph_shows_the_lifecycle_groups(hub: Hub):
    nodes = hub.ui.graphql(ASSET_GROUPS)["assetNodes"]
    defined = {node["groupName"] for node in nodes if node["isMaterializable"] or node["isObservable"]}
    assert defined >= LIFECYCLE_GROUPS, f"lifecycle groups without assets: {LIFECYCLE_GROUPS - defined}"

    with chromium_page(CHROMIUM) as page:
        page.before_each_page(COMMUNITY_PROMPT_SEEN)
        page.goto(f"{hub.ui.url}/asset-groups")
        shown = page.wait_for(GRAPH_NODE_NAMES, defined, timeout_seconds=90)
        # The picture waits for the page's network to go quiet (the layout's last queries answered).
        page.screenshot(ARTIFACTS / "asset-graph.png")

    # Every group the code location defines (later stages such as open_science included) is in the graph.
    assert shown >= defined, f"groups not in the graph: {defined - shown}; shown: {shown}"
    assert (ARTIFACTS / "asset-graph.png").stat().st_size > 10_000
