"""Jobs: what the sensor and the schedule launch."""

import dagster as dg

from hdh_pipelines.assets.ingestion import QUARANTINE_KEY, ingest_delivery_assets
from hdh_pipelines.partitions import DELIVERIES

ingest_delivery_job = dg.define_asset_job(
    "ingest_delivery_job",
    selection=dg.AssetSelection.assets(ingest_delivery_assets),
    partitions_def=DELIVERIES,
    description="Verify, decrypt and load one delivery (one partition per delivery).",
    tags={"hdh/kind": "ingestion"},
)

# Everything that is built from the raw tables, refreshed once a night.
nightly_job = dg.define_asset_job(
    "nightly_refresh_job",
    selection=dg.AssetSelection.keys(QUARANTINE_KEY)
    | dg.AssetSelection.assets(ingest_delivery_assets).downstream(include_self=False),
    description="Nightly refresh of the assets downstream of ingestion.",
)
