"""The dbt manifest every process of the code location reads is replaced whole, never rewritten in place.

A small dbt project of its own (real `dbt parse` runs), so that the repository's manifest, which the
other tests read, is not touched.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster_dbt import DbtProject
from dagster_dbt.errors import DagsterDbtCliRuntimeError

from hdh_pipelines.normalisation.manifest import (
    SCRATCH_PREFIX,
    parse_manifest,
    parse_project,
    prepared_manifest_path,
)


@pytest.fixture
def small_project(tmp_path: Path) -> DbtProject:
    folder = tmp_path / "project"
    (folder / "models").mkdir(parents=True)
    (folder / "dbt_project.yml").write_text(
        "name: small\nversion: '1.0'\nprofile: small\nmodel-paths: ['models']\n"
    )
    (folder / "profiles.yml").write_text(
        "small:\n  target: local\n  outputs:\n    local:\n      type: duckdb\n"
        f"      path: {tmp_path / 'small.duckdb'}\n"
    )
    (folder / "models" / "persons.sql").write_text("select 1 as person_id\n")
    describe(folder, "first description")
    return DbtProject(project_dir=folder, profiles_dir=folder)


def describe(folder: Path, description: str) -> None:
    (folder / "models" / "persons.yml").write_text(
        f"version: 2\nmodels:\n  - name: persons\n    description: {description}\n"
    )


def description_in(text: str) -> str:
    return parse_manifest(json.loads(text)).models["persons"].description


def scratch_folders(project: DbtProject) -> list[str]:
    target = project.project_dir / project.target_path
    return [path.name for path in target.iterdir() if path.name.startswith(SCRATCH_PREFIX)]


def test_a_parse_replaces_the_manifest_so_a_reader_keeps_the_whole_one_it_opened(small_project, monkeypatch):
    assert not small_project.manifest_path.exists()
    prepared_manifest_path(small_project)  # a checkout that never parsed is prepared on first use
    first = small_project.manifest_path.stat()

    describe(small_project.project_dir, "second description")
    # Outside `dagster dev`, an existing manifest is the deployed one: not parsed again.
    prepared_manifest_path(small_project)
    assert small_project.manifest_path.stat().st_mtime_ns == first.st_mtime_ns

    with open(small_project.manifest_path, encoding="utf-8") as reader:
        monkeypatch.setenv("DAGSTER_IS_DEV_CLI", "1")
        prepared_manifest_path(small_project)
        # The reader, opened before the parse, still reads the first manifest, whole.
        assert description_in(reader.read()) == "first description"

    assert small_project.manifest_path.stat().st_ino != first.st_ino
    assert description_in(small_project.manifest_path.read_text()) == "second description"
    assert scratch_folders(small_project) == []


def test_a_failed_parse_leaves_the_last_manifest_in_place(small_project):
    parse_project(small_project)
    before = small_project.manifest_path.read_bytes()
    # What a parse killed before its clean-up (dagster dev stopped) leaves; the next parse removes it.
    killed = small_project.project_dir / small_project.target_path / f"{SCRATCH_PREFIX}killed"
    killed.mkdir()
    (killed / "partial_parse.msgpack").write_bytes(b"half")

    (small_project.project_dir / "models" / "broken.sql").write_text("select {{ unclosed(\n")
    with pytest.raises(DagsterDbtCliRuntimeError):
        parse_project(small_project)

    assert small_project.manifest_path.read_bytes() == before
    assert scratch_folders(small_project) == []
    os.remove(small_project.project_dir / "models" / "broken.sql")
    parse_project(small_project)  # and the next parse, once the model is fixed, succeeds
    assert description_in(small_project.manifest_path.read_text()) == "first description"


def test_dbt_target_path_moves_the_code_locations_manifest(tmp_path):
    """dbt's own DBT_TARGET_PATH, honoured by the code location as by dbt and dagster-dbt."""
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "from hdh_pipelines.normalisation.manifest import dbt_project as p; print(p.manifest_path)",
        ],
        env={**os.environ, "DBT_TARGET_PATH": str(tmp_path / "own")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == str(tmp_path / "own" / "manifest.json")
