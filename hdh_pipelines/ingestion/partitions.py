"""Delivery partitions: one dynamic partition per (provider, delivery_id).

A partition key is ``<provider>/<delivery_id>``. Dagster forbids ``...`` in
partition keys while the delivery format allows it inside an id, so dots are
written ``%2E`` in that one case; ``%`` never occurs in a valid id, which keeps
the mapping reversible.
"""

from __future__ import annotations

import hashlib

import dagster as dg

from hdh_deliver.names import check_delivery_names, is_delivery_id, is_provider

DELIVERIES = dg.DynamicPartitionsDefinition(name="deliveries")
_DOT = "%2E"
_TAG_VALUE_LIMIT = 63
MANIFEST_DIGEST_TAG = "hdh/manifest-sha256"
# Added by the ingestion step: published, held or quarantined; the machine-readable reason; one
# sentence of counts and dataset names (never a delivered value).
OUTCOME_TAG = "hdh/outcome"
REASON_TAG = "hdh/reason"
SUMMARY_TAG = "hdh/summary"


def delivery_partition_key(provider: str, delivery_id: str) -> str:
    check_delivery_names(provider, delivery_id)
    encoded = delivery_id.replace(".", _DOT) if "..." in delivery_id else delivery_id
    return f"{provider}/{encoded}"


def parse_delivery_partition_key(key: str) -> tuple[str, str]:
    provider, _, encoded = key.partition("/")
    delivery_id = encoded.replace(_DOT, ".")
    if not (is_provider(provider) and is_delivery_id(delivery_id)):
        raise ValueError(f"{key!r} is not a delivery partition key")
    return provider, delivery_id


def tag_value(text: str) -> str:
    """A run-tag value within Dagster's strict rules: ≤ 63 of ``[A-Za-z0-9_.-]``.

    Valid provider names and delivery ids use only those characters; an id too
    long is cut and suffixed with a digest so the tag stays unique.
    """
    if len(text) <= _TAG_VALUE_LIMIT:
        return text
    return f"{text[:50]}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def delivery_run_tags(provider: str, delivery_id: str, manifest_sha256: str | None) -> dict[str, str]:
    tags = {"hdh/provider": provider, "hdh/delivery": tag_value(delivery_id), "hdh/kind": "ingestion"}
    if manifest_sha256:
        # The whole digest: the run refuses any other manifest (a prefix could be matched on purpose).
        tags[MANIFEST_DIGEST_TAG] = manifest_sha256
    return tags
