"""Jobs: what the sensor and the schedule launch."""

import dagster as dg

from hdh_pipelines.core.partitions import MONTHS
from hdh_pipelines.ingestion.assets import ingest_delivery_assets
from hdh_pipelines.ingestion.partitions import DELIVERIES
from hdh_pipelines.normalisation.assets import SNDS_STAGING_GROUP
from hdh_pipelines.open_science.assets import data_challenge, synthetic_snds
from hdh_pipelines.rights.assets import REQUESTS_KEY
from hdh_pipelines.workspaces.assets import project_workspace

ingest_delivery_job = dg.define_asset_job(
    "ingest_delivery_job",
    selection=dg.AssetSelection.assets(ingest_delivery_assets),
    partitions_def=DELIVERIES,
    description="Verify, decrypt, validate and load one delivery (one partition per delivery).",
    tags={"hdh/kind": "ingestion"},
)

# Everything that is built from the raw tables, refreshed once a night; the
# monthly models over a range of months, in one run. Workspaces are built per
# project, when their leads ask (docs/workspaces.md).
nightly_job = dg.define_asset_job(
    "nightly_refresh_job",
    selection=dg.AssetSelection.all()
    - dg.AssetSelection.assets(ingest_delivery_assets)
    - dg.AssetSelection.assets(project_workspace)
    # A challenge export is prepared when a challenge is opened, not every night.
    - dg.AssetSelection.assets(data_challenge, synthetic_snds)
    # Requests are processed when they arrive (rights_request_sensor); their deadlines are checked nightly.
    - dg.AssetSelection.assets(REQUESTS_KEY)
    # Views over the raw Parquet, rebuilt when their raw table is loaded (snds_staging_automation).
    - dg.AssetSelection.groups(SNDS_STAGING_GROUP),
    partitions_def=MONTHS,
    description="Nightly refresh of everything built from the raw tables (normalisation, catalogue…); "
    "monthly models over the last HDH_NIGHTLY_LOOKBACK_MONTHS months.",
    tags={"hdh/kind": "nightly"},
)
