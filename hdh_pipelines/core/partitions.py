"""The hub's one calendar of monthly partitions, shared by every stage partitioned by month.

The normalised event tables, the referential checks, the nightly refresh and
the project workspaces all cut time the same way, so a month selected in one
of them means the same partition in the others.
"""

import os

import dagster as dg

# Months of event data, from HDH_FIRST_MONTH (earlier months have no partition)
# to the current month included (end_offset=1: this month's data arrive daily).
MONTHS = dg.MonthlyPartitionsDefinition(
    start_date=os.environ.get("HDH_FIRST_MONTH", "2024-01-01"), end_offset=1
)
