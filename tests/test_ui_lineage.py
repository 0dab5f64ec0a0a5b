"""The lineage a person reads in the Dagster UI: from the SFTP inbox to a project workspace, by group.

A real `dagster dev` on the repository's `workspace.yaml` and a real headless Chromium (the OS package).
The whole graph does not fit a screen; the picture is the global lineage collapsed by group, where the
story reads left to right: ingestion (the SFTP inbox) -> raw -> normalisation -> marts -> workspaces.
That the groups' edges stand for real asset edges (the inbox upstream of the raw tables, a lineage from
two delivered datasets to the workspace) is checked on the definitions. Nothing is materialised.
"""

from __future__ import annotations

import os
import shutil
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from ui_support import (
    ARTIFACTS,
    CHROMIUM,
    COMMUNITY_PROMPT_SEEN,
    GRAPH_NODE_NAMES,
    DagsterDev,
    chromium_page,
    dagster_dev,
    hub_environment,
)

from hdh_pipelines.definitions import defs
from hdh_pipelines.ingestion.assets import INBOX_KEY, QUARANTINE_KEY
from hdh_pipelines.normalisation.manifest import dbt_project

REPO = Path(__file__).resolve().parents[1]
WORKSPACE_KEY = dg.AssetKey(["workspaces", "project_workspace"])
STORY_DATASETS = [dg.AssetKey(["raw", "ir_ben_r"]), dg.AssetKey(["raw", "er_prs_f"])]
STORY_GROUPS = {"ingestion", "raw", "normalisation", "workspaces"}
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"


@pytest.fixture(scope="module")
def repository_manifest_before() -> os.stat_result:
    return dbt_project.manifest_path.stat()


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory, repository_manifest_before) -> Iterator[DagsterDev]:
    folder = tmp_path_factory.mktemp("ui-lineage")
    environment = hub_environment(folder)
    home = Path(environment["DAGSTER_HOME"])
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    # Created before `dagster dev` opens it, so its processes never create the storage at the same time.
    dg.DagsterInstance.from_config(str(home)).dispose()
    with dagster_dev(environment, folder / "dagster-dev.log") as server:
        # Loading the code location (dbt manifest, registry) takes minutes on a busy machine.
        server.wait_until_loaded(timeout_seconds=480)
        yield server


def shortest_path(graph, start: dg.AssetKey, goal: dg.AssetKey) -> list[dg.AssetKey]:
    previous: dict[dg.AssetKey, dg.AssetKey | None] = {start: None}
    queue = deque([start])
    while queue:
        key = queue.popleft()
        for child in sorted(graph.get(key).child_keys):
            if child not in previous:
                previous[child] = key
                queue.append(child)
    assert goal in previous, f"no lineage from {start.to_user_string()} to {goal.to_user_string()}"
    path, key = [], goal
    while key is not None:
        path.append(key)
        key = previous[key]
    return path[::-1]


def story_keys() -> list[dg.AssetKey]:
    """The inbox, its quarantine table, and each story dataset's shortest lineage to the workspace."""
    graph = defs.resolve_asset_graph()
    keys = [INBOX_KEY, QUARANTINE_KEY]
    for raw in STORY_DATASETS:
        assert INBOX_KEY in graph.get(raw).parent_keys
        keys += [k for k in shortest_path(graph, raw, WORKSPACE_KEY) if k not in keys]
    return keys


def test_dagster_dev_parses_dbt_into_a_folder_of_its_own(ui: DagsterDev, repository_manifest_before):
    """The manifest every other test and process reads is not rewritten under them (ui_support)."""
    assert (ui.log_file.parent / "dbt-target" / "manifest.json").is_file()
    after = dbt_project.manifest_path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (
        repository_manifest_before.st_ino,
        repository_manifest_before.st_mtime_ns,
    )


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install -y chromium")
def test_the_lineage_reads_from_the_sftp_inbox_to_the_workspace(ui: DagsterDev):
    entries = ui.graphql(LOCATIONS)["workspaceOrError"]["locationEntries"]
    assert [entry["name"] for entry in entries] == ["hdh_pipelines"]

    keys = story_keys()
    graph = defs.resolve_asset_graph()
    assert {graph.get(k).group_name for k in keys} >= STORY_GROUPS
    target = ARTIFACTS / "lineage-inbox-to-workspace.png"
    with chromium_page(CHROMIUM, width=1800, height=1000) as page:
        page.before_each_page(COMMUNITY_PROMPT_SEEN)
        page.call("Page.navigate", url=f"{ui.url}/asset-groups")
        shown = page.wait_for(GRAPH_NODE_NAMES, STORY_GROUPS, timeout_seconds=90)
        page.screenshot(target)
    assert shown >= STORY_GROUPS, f"not in the graph: {STORY_GROUPS - shown}"
    assert target.stat().st_size > 10_000
