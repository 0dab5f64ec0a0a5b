"""The hub's one small-count rule, for every stage that shows a count of persons.

Tables published by open science get the full disclosure control of
``hdh_pipelines.open_science.disclosure`` (complements, dominance, audit); a
single count in metadata or on a page gets ``coarse_count``. docs/open_science.md.
"""

# A figure about fewer distinct persons than this is never shown (open data, indicators, catalogue
# statistics, counts in metadata).
DISCLOSURE_THRESHOLD = 11


def coarse_count(count: int) -> int | str:
    """A count of persons for metadata or a page that is not audited as a table: exact when it is 0 or
    at least DISCLOSURE_THRESHOLD, else only ``<DISCLOSURE_THRESHOLD``."""
    return count if count == 0 or count >= DISCLOSURE_THRESHOLD else f"<{DISCLOSURE_THRESHOLD}"
