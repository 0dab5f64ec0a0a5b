"""No delivered value outside private storage (issue 13 §4).

Dagster's event log (metadata, descriptions, logs, failures) is shown to every
UI user: it gets counts, registered column names and positions only. Values,
masked examples and query errors stay in owner-only reports (0700 folders,
0600 files from their first byte).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from pathlib import Path

import pytest
from dbt_inputs import ben, write_raw
from deliveries import build, columns_of, ingest, rejected, upload, valid_rows, write_csv

from hdh_deliver.errors import Reason
from hdh_deliver.provider import SourceFile
from hdh_pipelines.ingestion.pipeline import QualityGate
from hdh_pipelines.quality import validate_table
from hdh_pipelines.quality.checks import check_result
from hdh_pipelines.registry import default_registry
from hdh_pipelines.workspaces.errors import WorkspaceRefused
from hdh_pipelines.workspaces.pseudonyms import load_project_key

ODD_SEX = "Q7Z"  # a value no expectation allows, easy to find in any text
ODD_YEAR = "1066"


@pytest.fixture
def umask_022():
    """The usual umask, under which plain mkdir/open give 0755/0644."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _shown_in_dagster(result) -> str:
    """Everything of an AssetCheckResult that lands in the event log, but the path of the private report.

    That path is checked on its own: it is made of the private root, the delivery and a name of the
    table and the report's time, whose digits now and then hold a searched value by chance (the
    1066th pytest run writes under /tmp/pytest-of-<user>/pytest-1066; microseconds 710660 do too).
    """
    metadata = {key: str(getattr(value, "value", value)) for key, value in result.metadata.items()}
    report = Path(metadata.pop("data_docs", "IR_BEN_R-00000000T000000000000Z.html"))
    assert re.fullmatch(r"[A-Z0-9_]+-\d{8}T\d{12}Z\.html", report.name), report.name
    return json.dumps(metadata) + (result.description or "")


def test_quality_check_shows_counts_never_values(tmp_path, umask_022):
    rows = [ben(f"P{i}", "1") for i in range(20)]
    rows[3] = {**rows[3], "BEN_SEX_COD": ODD_SEX, "BEN_NAI_ANN": ODD_YEAR}
    path = write_raw(tmp_path / "raw", "IR_BEN_R", rows)
    docs = tmp_path / "private" / "quality" / "cnam" / "d1"
    report = validate_table(default_registry().resolve("IR_BEN_R"), [path], docs_dir=docs)
    failed = [o for o in report.failures if "BEN_SEX_COD" in o.columns]
    assert failed and any(ODD_SEX in example for o in failed for example in o.sample_unexpected)

    for outcome in report.outcomes:
        assert ODD_SEX not in outcome.description and ODD_YEAR not in outcome.description
    shown = _shown_in_dagster(check_result(report, "cnam/d1"))
    assert ODD_SEX not in shown and ODD_YEAR not in shown and rows[0]["BEN_NIR_PSA"][:3] not in shown
    assert "BEN_SEX_COD" in shown  # the registered column name is what points at the problem

    # The examples are in the owner-only report, private from its first byte.
    page = report.data_docs_path
    assert ODD_SEX in page.read_text(encoding="utf-8")
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    for folder in (docs, docs.parent, docs.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_query_errors_stay_in_the_private_report(tmp_path):
    """A failing expectation query can quote a value (DuckDB: could not convert 'x'): not in the UI."""
    from hdh_pipelines.quality.suites import build_suite

    schema = default_registry().resolve("IR_BEN_R")
    broken = {
        "type": "unexpected_rows_expectation",
        "kwargs": {"unexpected_rows_query": "SELECT CAST(BEN_SEX_COD AS INTEGER) AS x FROM {batch}"},
        "meta": {"name": "broken", "category": "conformance", "severity": "warning", "description": "Cast."},
    }
    (tmp_path / "IR_BEN_R.json").write_text(json.dumps({"name": "IR_BEN_R", "expectations": [broken]}))
    path = write_raw(tmp_path / "raw", "IR_BEN_R", [{**ben("P", "1"), "BEN_SEX_COD": ODD_SEX}])
    report = validate_table(schema, [path], suite=build_suite(schema, directory=tmp_path))
    outcome = report.outcome("broken")
    assert outcome.error and ODD_SEX in outcome.error  # DuckDB quotes the value…
    assert ODD_SEX not in outcome.description  # …which only the private report keeps
    assert ODD_SEX not in _shown_in_dagster(check_result(report, "cnam/d1"))


def test_a_file_without_header_is_refused_without_echoing_its_first_row(
    tmp_path, keys, hub, sftp_settings, inbox
):
    columns = columns_of("IR_BEN_R")
    rows = [[f"value-{r}-{c}" for c in range(len(columns))] for r in range(4)]
    rows[0][columns.index("BEN_NIR_PSA")] = "PSEUDO0123456789X"
    # The header line is missing: the first data row stands where the column names should be.
    path = write_csv(tmp_path / "IR_BEN_R.csv", "IR_BEN_R", rows[1:], columns=rows[0])
    upload(sftp_settings, build(tmp_path, keys, "cnam", "nohdr", [SourceFile(path, "IR_BEN_R")]), inbox)
    refusal = rejected(sftp_settings, inbox, hub, "cnam", "nohdr")
    assert refusal.reason == Reason.UNKNOWN_COLUMN
    record = hub.storage.quarantine_file("cnam", "nohdr").read_text()
    for text in (refusal.message, str(refusal), record):
        assert "PSEUDO0123456789X" not in text and "value-0-" not in text
    assert "position(s) 1, 2" in refusal.message


def test_a_malformed_secrets_file_names_the_error_not_the_key(tmp_path):
    key = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f'projects:\n  demo-project: "{key}\n  other: [\n')
    secrets.chmod(0o600)
    with pytest.raises(WorkspaceRefused) as caught:
        load_project_key("demo-project", secrets, environ={})
    text = f"{caught.value} {caught.value.message} {caught.value.__cause__} {caught.value.__context__}"
    assert key[:16] not in text and key[-16:] not in text
    assert caught.value.reason == "invalid_secrets_file" and "line" in caught.value.message


def test_reports_of_a_delivery_are_owner_only(tmp_path, keys, hub, sftp_settings, inbox, umask_022):
    gated = dataclasses.replace(hub, quality_gate=QualityGate())
    rows = valid_rows("IR_BEN_R", 10)
    path = write_csv(tmp_path / "IR_BEN_R.csv", "IR_BEN_R", [*rows, list(rows[0])])
    upload(sftp_settings, build(tmp_path, keys, "cnam", "held", [SourceFile(path, "IR_BEN_R")]), inbox)
    assert ingest(sftp_settings, inbox, gated, "cnam", "held").held
    for found in Path(gated.storage.root).rglob("*"):
        mode = stat.S_IMODE(found.stat().st_mode)
        assert mode == (0o700 if found.is_dir() else 0o600), found
