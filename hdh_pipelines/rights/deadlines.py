"""GDPR deadlines of the requests: one month from receipt, extendable by two more with a recorded reason.

GDPR art. 12(3): the controller answers "within one month of receipt of the
request", a period that "may be extended by two further months where
necessary", the person being told why within the first month. Months are
counted as in Regulation (EEC, Euratom) No 1182/71 art. 3: the period ends
on the same day of the month, or on the month's last day when it has none.
"""

from __future__ import annotations

import calendar
from collections import Counter
from datetime import date

ANSWER_MONTHS = 1
EXTENSION_MONTHS = 2
# Age buckets of the open requests, by days since receipt; "overdue" is past the deadline whatever the age.
AGE_BUCKETS = ((7, "0-7 days"), (21, "8-21 days"), (None, "22 days or more"))
OVERDUE = "overdue"


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def due_on(received: date, extended: bool) -> date:
    return add_months(received, ANSWER_MONTHS + (EXTENSION_MONTHS if extended else 0))


def is_overdue(entry: dict, today: date) -> bool:
    return entry["status"] == "open" and date.fromisoformat(entry["due_on"]) < today


def age_bucket(entry: dict, today: date) -> str:
    if is_overdue(entry, today):
        return OVERDUE
    age = (today - date.fromisoformat(entry["received_on"])).days
    return next(label for limit, label in AGE_BUCKETS if limit is None or age <= limit)


def open_request_counts(entries: list[dict], today: date) -> dict[str, dict[str, int]]:
    """Open requests by age bucket and by type: counts only, nothing about a request."""
    open_entries = [entry for entry in entries if entry["status"] == "open"]
    buckets = Counter(age_bucket(entry, today) for entry in open_entries)
    return {
        "by_age": {label: buckets.get(label, 0) for _, label in AGE_BUCKETS}
        | {OVERDUE: buckets.get(OVERDUE, 0)},
        "by_type": dict(sorted(Counter(entry["type"] for entry in open_entries).items())),
    }
