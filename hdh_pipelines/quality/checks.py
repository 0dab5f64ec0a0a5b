"""Quality: each raw table's Great Expectations suite, as a blocking asset check per delivery partition.

The suite runs inside the ingestion step, on the staged tables, before
anything is published: a delivery with an error-severity failure is kept in
``held/`` and never reaches the raw tables that dbt reads. The check reports
that validation on the delivery's partition of each raw asset: it fails with
severity ERROR (blocking: nothing downstream is materialised from the run, and
automation waits for a passing check) when an error-severity expectation
failed, with WARN when only warnings did, and passes otherwise.

Dagster's event log is not private storage: the check's metadata and
description carry counts, registered column names and expectation names,
never a delivered value; examples stay in the owner-only HTML report.
"""

import dagster as dg

from hdh_pipelines.ingestion.assets import raw_asset_key
from hdh_pipelines.ingestion.partitions import DELIVERIES, parse_delivery_partition_key
from hdh_pipelines.ingestion.resources import HubResource
from hdh_pipelines.quality import ExpectationOutcome, ValidationReport
from hdh_pipelines.registry import DatasetSchema, default_registry

CHECK_NAME = "great_expectations_suite"
_STATUS = {True: "passed", False: "**FAILED**", None: "not evaluated"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def outcomes_table(outcomes: tuple[ExpectationOutcome, ...]) -> str:
    """Markdown table of expectation outcomes, failures first: counts and columns, never values."""
    ordered = sorted(outcomes, key=lambda o: (not o.failed, o.severity != "error", o.name))
    lines = [
        "| expectation | columns | category | severity | status | unexpected | allowed |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in ordered:
        percent = o.unexpected_percent or 0
        unexpected = "" if o.unexpected_count is None else f"{o.unexpected_count:,} ({percent:.3g} %)"
        lines.append(
            f"| {_cell(o.name)} | {_cell(', '.join(o.columns))} | {o.category} | {o.severity} "
            f"| {_STATUS[o.success]} | {unexpected} | {(1 - o.threshold) * 100:.3g} % |"
        )
    return "\n".join(lines)


def check_result(report: ValidationReport, delivery: str) -> dg.AssetCheckResult:
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
        "outcomes": dg.MetadataValue.md(outcomes_table(report.outcomes)),
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
        passed=not report.failures,
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=description,
    )


def build_quality_check(schema: DatasetSchema) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=raw_asset_key(schema.name),
        name=CHECK_NAME,
        blocking=True,
        partitions_def=DELIVERIES,
        description=f"Great Expectations suite of {schema.name}: generated from its Table Schema "
        "(expectations/README.md) plus the hand-written domain expectations of "
        f"expectations/{schema.name}.json.",
        metadata={"suite": f"expectations/{schema.name}.json"},
    )
    def quality_check(context: dg.AssetCheckExecutionContext, hub: HubResource) -> dg.AssetCheckResult:
        provider, delivery_id = parse_delivery_partition_key(context.partition_key)
        reports = hub.storage().quality_summary(provider, delivery_id) or {}
        delivery = f"{provider}/{delivery_id}"
        if schema.name not in reports:
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description=f"No validation is stored for {schema.name} in delivery {delivery}: "
                "it was loaded without the quality gate. Re-deliver it, or validate it before use.",
                metadata={"delivery": delivery},
            )
        return check_result(ValidationReport.from_json(reports[schema.name]), delivery)

    return quality_check


quality_checks = [build_quality_check(default_registry().resolve(n)) for n in default_registry().names()]
