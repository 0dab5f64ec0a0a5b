"""The README's demo command, end to end, from delivered data: SFTP deliveries through ingestion, the
quality gate, dbt, linkage, the catalogue, both sample workspaces and an indicator (all real parts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[1]
# The demo's own limit (the subprocess's timeout below) is the test's: pytest's default of 600 s stopped it
# on a machine loaded five times over, where the whole lifecycle took longer.
DEMO_TIMEOUT_SECONDS = 1200


@pytest.mark.timeout(DEMO_TIMEOUT_SECONDS + 60)
def test_the_demo_runs_the_whole_lifecycle_from_delivered_data(tmp_path):
    work = tmp_path / "demo"
    completed = subprocess.run(
        [sys.executable, "-m", "hdh_devtools.demo.run", "--workdir", str(work), "--persons", "600"],
        cwd=REPO,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
    )
    assert completed.returncode == 0, completed.stdout[-5000:] + completed.stderr[-5000:]
    summary = completed.stdout[completed.stdout.index("hdh-pipelines demo summary") :]
    assert "2 ingested, 2 quarantined, 1 held" in summary
    assert "held: a blocking expectation failed" in completed.stdout and "refused" not in completed.stdout
    assert "[suppressed]" in summary, "the indicator shows suppressed cells"

    private = work / "private"
    with duckdb.connect(str(private / "warehouse.duckdb"), read_only=True) as connection:

        def count(table: str) -> int:
            return connection.execute(f"select count(*) from {table}").fetchone()[0]

        assert count("marts.persons") > 0 and count("omop.person") == count("marts.persons")
        assert count("linkage.links") > 0
        assert count("algorithms.alg_treated_diabetes") > 0
    for project in ("diabetes-drug-use", "mi-outcomes-linked"):
        assert list((private / "workspaces" / project).rglob("*.parquet")), project
    assert (work / "public" / "catalogue" / "index.html").exists()
    assert list((work / "public" / "open-data").rglob("metadata.json"))
