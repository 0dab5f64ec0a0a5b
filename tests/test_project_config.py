"""Telemetry is off in both tools that send it by default, and dbt works offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_dagster_instance_telemetry_off():
    assert yaml.safe_load((REPO / "dagster.yaml").read_text())["telemetry"]["enabled"] is False


def test_dbt_usage_stats_off_and_project_parses(tmp_path):
    project = yaml.safe_load((REPO / "dbt_project" / "dbt_project.yml").read_text())
    assert project["flags"]["send_anonymous_usage_stats"] is False
    env = {**os.environ, "HDH_WAREHOUSE_PATH": str(tmp_path / "w.duckdb")}
    dbt = Path(sys.executable).with_name("dbt")
    result = subprocess.run(
        [
            str(dbt),
            "parse",
            "--project-dir",
            "dbt_project",
            "--profiles-dir",
            "dbt_project",
            "--target-path",
            str(tmp_path / "target"),
            "--log-path",
            str(tmp_path / "logs"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
