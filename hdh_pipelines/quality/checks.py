"""Quality: each raw table's Great Expectations suite, as a blocking asset check per delivery partition.

The suite runs inside the ingestion step, on the staged tables, before
anything is published: a delivery with an error-severity failure is kept in
``held/`` and never reaches the raw tables that dbt reads. The check is
declared on the ingestion step (``check_specs``), which reports that
validation on the delivery's partition of each raw asset the delivery holds,
and of no other: it fails with
severity ERROR (blocking: nothing downstream is materialised from the run, and
automation waits for a passing check) when an error-severity expectation
failed, with WARN when only warnings did, and passes otherwise.

Dagster's event log is not private storage: the check's metadata and
description carry counts, registered column names and expectation names,
never a delivered value; examples stay in the owner-only HTML report.
"""

import dagster as dg

from hdh_pipelines.ingestion.partitions import DELIVERIES
from hdh_pipelines.quality import ExpectationOutcome, ValidationReport
from hdh_pipelines.registry import DatasetSchema

CHECK_NAME = "great_expectations_suite"
_STATUS = {True: "passed", False: "FAILED", None: "not evaluated"}


OUTCOMES_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("expectation", "string"),
        dg.TableColumn("columns", "string", description="Registered column names the expectation reads"),
        dg.TableColumn("category", "string"),
        dg.TableColumn("severity", "string", description="error blocks the delivery; warning does not"),
        dg.TableColumn("status", "string"),
        dg.TableColumn("unexpected_count", "int", description="Rows breaking the expectation"),
        dg.TableColumn("unexpected_percent", "float"),
        dg.TableColumn("allowed_percent", "float", description="Share of rows allowed to break it"),
    ]
)


def outcomes_table(outcomes: tuple[ExpectationOutcome, ...]) -> dg.TableMetadataValue:
    """Expectation outcomes as a table, failures first: counts and columns, never values."""
    ordered = sorted(outcomes, key=lambda o: (not o.failed, o.severity != "error", o.name))
    records = [
        dg.TableRecord(
            {
                "expectation": o.name,
                "columns": ", ".join(o.columns),
                "category": o.category,
                "severity": o.severity,
                "status": _STATUS[o.success],
                "unexpected_count": o.unexpected_count,
                "unexpected_percent": None
                if o.unexpected_percent is None
                else round(o.unexpected_percent, 3),
                "allowed_percent": round((1 - o.threshold) * 100, 3),
            }
        )
        for o in ordered
    ]
    return dg.MetadataValue.table(records, schema=OUTCOMES_SCHEMA)


def check_result(
    report: ValidationReport, delivery: str, asset_key: dg.AssetKey | None = None
) -> dg.AssetCheckResult:
    """The asset check's verdict and metadata for one dataset of one delivery."""
    blocking = report.blocking_failures
    warnings = [o for o in report.failures if o.severity != "error"]
    metadata: dict[str, object] = {
        "delivery": delivery,
        "rows": report.rows,
        "expectations": len(report.outcomes),
        "failed_errors": len(blocking),
        "failed_warnings": len(warnings),
        "not_evaluated": sum(not o.evaluated for o in report.outcomes),
        "outcomes": outcomes_table(report.outcomes),
    }
    for outcome in report.failures:
        metadata[f"failed: {outcome.name}"] = dg.MetadataValue.json(
            {
                "severity": outcome.severity,
                "category": outcome.category,
                "unexpected_count": outcome.unexpected_count,
                "unexpected_percent": outcome.unexpected_percent,
                "columns": list(outcome.columns),
                # Value-free; the examples stay in the owner-only report (data_docs).
                "explanation": outcome.description,
            }
        )
    if report.data_docs_path is not None:
        metadata["data_docs"] = dg.MetadataValue.path(str(report.data_docs_path))
    if blocking:
        description = (
            f"Held: {len(blocking)} blocking expectation(s) failed ({', '.join(o.name for o in blocking)}); "
            "the delivery was not published. A corrected delivery (new delivery id) replaces it."
        )
    elif warnings:
        description = f"Published with {len(warnings)} warning(s): {', '.join(o.name for o in warnings)}."
    else:
        description = f"All {len(report.outcomes)} expectations hold."
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=CHECK_NAME,
        passed=not report.failures,
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=description,
    )


def quality_check_spec(schema: DatasetSchema, asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    """The blocking check of one raw asset, declared on the ingestion step that runs the validation."""
    return dg.AssetCheckSpec(
        CHECK_NAME,
        asset=asset_key,
        blocking=True,
        description=f"Great Expectations suite of {schema.name}: generated from its Table Schema "
        "(expectations/README.md) plus the hand-written domain expectations of "
        f"expectations/{schema.name}.json.",
        metadata={"suite": f"expectations/{schema.name}.json"},
        partitions_def=DELIVERIES,
    )


def delivery_check_result(
    asset_key: dg.AssetKey, dataset: str, reports: dict[str, dict], delivery: str
) -> dg.AssetCheckResult:
    """The check of one delivered dataset from its delivery's stored validation reports."""
    if dataset not in reports:
        return dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=CHECK_NAME,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"No validation is stored for {dataset} in delivery {delivery}: "
            "it was loaded without the quality gate. Re-deliver it, or validate it before use.",
            metadata={"delivery": delivery},
        )
    return check_result(ValidationReport.from_json(reports[dataset]), delivery, asset_key)
