"""Referential coverage: how much of each month's drug dispensations the drug referential (IR_PHA_R) maps.

A CIP13 the delivered IR_PHA_R does not hold gets no ATC class, so it drops out
of the drug-defined targeting algorithms, of ``omop.drug_exposure``'s ATC and of
the open dispensations, without any error. The asset check below measures that
per month of ``marts/drug_dispensations``: the share of dispensed lines and the
share of dispensed boxes whose CIP13 has no ATC class. Above
``UNMAPPED_ATC_WARN_SHARE`` it warns (a referential slightly behind new
presentations); above ``UNMAPPED_ATC_FAIL_SHARE`` it fails and blocks what is
built from the month in the same run (a missing or stale referential delivery).
docs/normalisation.md documents both thresholds.

Counted: lines actually dispensed (boxes > 0, not for information only), the
ones the algorithms and OMOP use. Metadata holds counts and shares only, never
a code.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import dagster as dg
import duckdb

from hdh_pipelines.core.constants import WAREHOUSE_POOL
from hdh_pipelines.core.partitions import MONTHS
from hdh_pipelines.normalisation.resources import WarehouseResource

DRUG_DISPENSATIONS_KEY = dg.AssetKey(["marts", "drug_dispensations"])
CHECK_NAME = "cip13_mapped_to_atc"
# Shares of unmapped dispensations (lines or boxes, the larger) in a month.
UNMAPPED_ATC_WARN_SHARE = 0.01
UNMAPPED_ATC_FAIL_SHARE = 0.05


@dataclass(frozen=True)
class MonthCoverage:
    """One month of dispensations: how many lines and boxes, and how many of them have no ATC class."""

    month: date
    lines: int
    unmapped_lines: int
    boxes: int
    unmapped_boxes: int

    @property
    def unmapped_line_share(self) -> float:
        return self.unmapped_lines / self.lines if self.lines else 0.0

    @property
    def unmapped_box_share(self) -> float:
        return self.unmapped_boxes / self.boxes if self.boxes else 0.0

    @property
    def unmapped_share(self) -> float:
        return max(self.unmapped_line_share, self.unmapped_box_share)


def month_coverage(connection: duckdb.DuckDBPyConnection, start: date, end: date) -> list[MonthCoverage]:
    """Coverage of each month of ``[start, end)`` (by FLX_DIS_DTD, the mart's partition), months in order."""
    rows = connection.execute(
        """
        select
            cast(date_trunc('month', flx_dis_dtd) as date) as month,
            count(*) as lines,
            count(*) filter (where atc_code is null) as unmapped_lines,
            coalesce(sum(boxes), 0) as boxes,
            coalesce(sum(boxes) filter (where atc_code is null), 0) as unmapped_boxes
        from marts.drug_dispensations
        where flx_dis_dtd >= ? and flx_dis_dtd < ?
            and boxes > 0
            and not is_for_information_only
        group by 1
        order by 1
        """,
        [start, end],
    ).fetchall()
    return [MonthCoverage(*row) for row in rows]


def coverage_result(months: Sequence[MonthCoverage]) -> dg.AssetCheckResult:
    """The verdict on the worst month: pass, warn above the warning share, fail (blocking) above the other."""
    worst = max(months, key=lambda m: m.unmapped_share, default=None)
    share = worst.unmapped_share if worst else 0.0
    table = "\n".join(
        [
            "| month | lines | unmapped lines | share | boxes | unmapped boxes | share |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {m.month:%Y-%m} | {m.lines} | {m.unmapped_lines} | {m.unmapped_line_share:.2%} "
                f"| {m.boxes} | {m.unmapped_boxes} | {m.unmapped_box_share:.2%} |"
                for m in months
            ),
        ]
    )
    metadata = {
        "months": len(months),
        "lines": sum(m.lines for m in months),
        "unmapped_lines": sum(m.unmapped_lines for m in months),
        "boxes": sum(m.boxes for m in months),
        "unmapped_boxes": sum(m.unmapped_boxes for m in months),
        "worst_month": f"{worst.month:%Y-%m}" if worst else "none",
        "worst_unmapped_share": round(share, 6),
        "warn_above": UNMAPPED_ATC_WARN_SHARE,
        "fail_above": UNMAPPED_ATC_FAIL_SHARE,
        "by_month": dg.MetadataValue.md(table),
    }
    if share > UNMAPPED_ATC_FAIL_SHARE:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=metadata,
            description=f"{share:.2%} of the dispensations of {worst.month:%Y-%m} have a CIP13 the drug "
            "referential IR_PHA_R does not map to an ATC class "
            f"(failure above {UNMAPPED_ATC_FAIL_SHARE:.0%}): "
            "deliver an up-to-date IR_PHA_R, then rebuild these months.",
        )
    if share > UNMAPPED_ATC_WARN_SHARE:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=metadata,
            description=f"{share:.2%} of the dispensations of {worst.month:%Y-%m} have no ATC class (warning "
            f"above {UNMAPPED_ATC_WARN_SHARE:.0%}): the drug referential may lag behind new presentations.",
        )
    return dg.AssetCheckResult(
        passed=True,
        metadata=metadata,
        description=f"At most {share:.2%} of a month's dispensations have no ATC class.",
    )


@dg.asset_check(
    asset=DRUG_DISPENSATIONS_KEY,
    name=CHECK_NAME,
    blocking=True,
    partitions_def=MONTHS,
    pool=WAREHOUSE_POOL,
    description="Share of the month's dispensed lines and boxes whose CIP13 the drug referential IR_PHA_R "
    f"maps to no ATC class: warns above {UNMAPPED_ATC_WARN_SHARE:.0%}, fails (blocking) above "
    f"{UNMAPPED_ATC_FAIL_SHARE:.0%} (docs/normalisation.md).",
)
def cip13_mapped_to_atc(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    window = context.partition_time_window
    with warehouse.exclusive(), warehouse.read_only() as connection:
        months = month_coverage(connection, window.start.date(), window.end.date())
    return coverage_result(months)
