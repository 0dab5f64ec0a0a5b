"""Ingestion: a delivery partition becomes raw tables, or a quarantine record.

The SFTP inbox is a source asset (``ingestion/sftp_inbox``) upstream of the
raw tables, observed by the inbox sensor. ``ingest_delivery`` is one
multi-asset with a raw table per registry dataset; a run materialises the
tables its delivery holds and reports, as the step that validated them, the
quality check of those tables and of no other. Any breach of the contract
fails the run with the reason in its metadata, records the delivery in
quarantine and publishes nothing of it. The run's tags say what happened
(``hdh/outcome``: published, held or quarantined) and why (``hdh/reason``).
"""

from collections import Counter

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from hdh_deliver.errors import DeliveryRejected
from hdh_pipelines.core.private_files import PRIVATE_FILE_MODE, make_private_dir
from hdh_pipelines.ingestion.partitions import (
    DELIVERIES,
    MANIFEST_DIGEST_TAG,
    OUTCOME_TAG,
    REASON_TAG,
    SUMMARY_TAG,
    parse_delivery_partition_key,
)
from hdh_pipelines.ingestion.pipeline import IngestionReport, LoadedFile, ingest_delivery
from hdh_pipelines.ingestion.raw_store import LINEAGE_COLUMNS
from hdh_pipelines.ingestion.receive import SftpDeliverySource
from hdh_pipelines.ingestion.resources import HubResource, SftpResource
from hdh_pipelines.quality.checks import CHECK_NAME, delivery_check_result, quality_check_spec
from hdh_pipelines.registry import DatasetSchema, default_registry

RAW_GROUP = "raw"
INGESTION_GROUP = "ingestion"
INGESTION_OWNERS = ["team:data-engineering"]
INBOX_KEY = dg.AssetKey(["ingestion", "sftp_inbox"])
QUARANTINE_KEY = dg.AssetKey(["ingestion", "delivery_quarantine"])
# hdh/reason of a held delivery; a quarantined one carries its refusal reason (bad_signature, …).
HELD_REASON = "blocking_expectation_failed"

sftp_inbox = dg.AssetSpec(
    key=INBOX_KEY,
    description="The providers' SFTP inbox, <inbox>/<provider>/<delivery_id>/. Observed by "
    "sftp_inbox_sensor: its data version changes when a new complete (signed) delivery appears.",
    group_name=INGESTION_GROUP,
    owners=INGESTION_OWNERS,
    kinds={"sftp"},
)


def raw_asset_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", dataset.lower()])


def _column_schema(schema: DatasetSchema) -> dg.TableSchema:
    columns = [
        dg.TableColumn(
            f.name,
            "VARCHAR",
            description=f"{f.description} (declared {f.type})",
            constraints=dg.TableColumnConstraints(nullable=not f.required),
        )
        for f in schema.fields
    ]
    columns += [dg.TableColumn(name, "VARCHAR", description="Lineage of the row") for name in LINEAGE_COLUMNS]
    return dg.TableSchema(columns=columns)


def _raw_spec(schema: DatasetSchema) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=raw_asset_key(schema.name),
        description=f"Raw {schema.name} as delivered: {schema.title}. One Parquet file per delivered file.",
        group_name=RAW_GROUP,
        owners=INGESTION_OWNERS,
        kinds={"parquet", "sftp"},
        skippable=True,
        partitions_def=DELIVERIES,
        deps=[INBOX_KEY],
        metadata={
            "dataset": schema.name,
            "family": schema.family,
            "dagster/column_schema": _column_schema(schema),
        },
        tags={"hdh/layer": "raw"},
    )


FILES_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("file", "string"),
        dg.TableColumn("delivered_as", "string", description="Dataset name in the manifest"),
        dg.TableColumn("rows", "int"),
        dg.TableColumn("encrypted_bytes", "int"),
        dg.TableColumn("plaintext_bytes", "int"),
        dg.TableColumn("ciphertext_sha256", "string", description="First 16 hex digits"),
        dg.TableColumn("decrypt_seconds", "float"),
        dg.TableColumn("load_seconds", "float"),
    ]
)


def _files_table(files: list[LoadedFile]) -> dg.TableMetadataValue:
    records = [
        dg.TableRecord(
            {
                "file": f.name,
                "delivered_as": f.dataset,
                "rows": f.rows,
                "encrypted_bytes": f.ciphertext_bytes,
                "plaintext_bytes": f.plaintext_bytes,
                "ciphertext_sha256": f.ciphertext_sha256[:16],
                "decrypt_seconds": f.decrypt_seconds,
                "load_seconds": f.load_seconds,
            }
        )
        for f in files
    ]
    return dg.MetadataValue.table(records, schema=FILES_SCHEMA)


def _quality_status(report: IngestionReport, dataset: str) -> str:
    if dataset not in report.quality_passed:
        return "not validated (quality gate off)"
    if report.quality_passed[dataset]:
        return "published: blocking expectations hold"
    return "held: a blocking expectation failed; see the check great_expectations_suite"


def _materialization(report: IngestionReport, dataset: str, rows: int, glob_of) -> dg.MaterializeResult:
    files = [f for f in report.files if f.registry_dataset == dataset]
    return dg.MaterializeResult(
        asset_key=raw_asset_key(dataset),
        metadata={
            "dagster/row_count": rows,
            "provider": report.provider,
            "delivery_id": report.delivery_id,
            "manifest_sha256": report.manifest_sha256,
            "signing_key_id": report.signing_key_id,
            "already_loaded": report.already_loaded,
            "loaded_at": report.loaded_at,
            "files": _files_table(files),
            "bytes_encrypted": sum(f.ciphertext_bytes for f in files),
            "decrypt_seconds": round(sum(f.decrypt_seconds for f in files), 3),
            "load_seconds": round(sum(f.load_seconds for f in files), 3),
            "raw_table_glob": dg.MetadataValue.path(glob_of(dataset)),
            "quality": _quality_status(report, dataset),
        },
    )


def outcome_tags(report: IngestionReport) -> dict[str, str]:
    """What a delivery's run did, as run tags: counts and dataset names, never a delivered value."""
    rows = report.rows_by_dataset()
    if report.held:
        held = sorted(dataset for dataset, passed in report.quality_passed.items() if not passed)
        return {
            OUTCOME_TAG: "held",
            REASON_TAG: HELD_REASON,
            SUMMARY_TAG: f"held: a blocking expectation failed in {', '.join(held)}; nothing published",
        }
    loaded = "already loaded from this manifest" if report.already_loaded else "published"
    return {
        OUTCOME_TAG: "published",
        SUMMARY_TAG: f"{loaded}: {len(rows)} table(s), {sum(rows.values())} row(s)",
    }


def quarantine_tags(rejection: DeliveryRejected) -> dict[str, str]:
    reason = str(rejection.reason)
    where = f" ({rejection.file})" if rejection.file else ""
    return {
        OUTCOME_TAG: "quarantined",
        REASON_TAG: reason,
        SUMMARY_TAG: f"quarantined: {reason}{where}; nothing published",
    }


def build_ingest_delivery(registry_schemas: list[DatasetSchema]) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="ingest_delivery",
        specs=[_raw_spec(schema) for schema in registry_schemas],
        check_specs=[quality_check_spec(schema, raw_asset_key(schema.name)) for schema in registry_schemas],
        partitions_def=DELIVERIES,
        # A run plans the raw tables and checks of the datasets its delivery holds (sftp_inbox_sensor).
        can_subset=True,
        op_tags={"hdh/kind": "ingestion"},
        # Transient faults (server gone mid-download, disk full) are retried;
        # a contract breach raises Failure(allow_retries=False) and is not.
        retry_policy=dg.RetryPolicy(max_retries=2, delay=20, backoff=dg.Backoff.EXPONENTIAL),
        description="Download, verify, decrypt, validate and load one SFTP delivery (hdh-delivery/1) "
        "into raw tables.",
    )
    def ingest_delivery_asset(context: dg.AssetExecutionContext, sftp: SftpResource, hub: HubResource):
        provider, delivery_id = parse_delivery_partition_key(context.partition_key)
        hub_context = hub.context()
        with sftp.session() as session:
            source = SftpDeliverySource(session, sftp.delivery_folder(provider, delivery_id))
            try:
                report = ingest_delivery(
                    source,
                    provider,
                    delivery_id,
                    hub_context,
                    run_id=context.run_id,
                    # Pinned to the manifest the sensor saw; absent for a run launched by hand.
                    expected_manifest_sha256=context.run.tags.get(MANIFEST_DIGEST_TAG),
                )
            except DeliveryRejected as rejection:
                details = {"provider": provider, "delivery_id": delivery_id, **rejection.as_dict()}
                context.instance.add_run_tags(context.run_id, quarantine_tags(rejection))
                # Yielded, not logged: logged events are only flushed at the next yield,
                # which a failing step never reaches.
                yield dg.AssetObservation(asset_key=QUARANTINE_KEY, metadata=details)
                raise dg.Failure(
                    description=f"Delivery {provider}/{delivery_id} quarantined ({rejection.reason}): "
                    f"{rejection.message}",
                    metadata=details,
                    allow_retries=False,
                ) from None
        if report.already_loaded:
            context.log.info(
                f"{provider}/{delivery_id} was already loaded from this manifest; nothing to do."
            )
        # Before the check results: a failed blocking check fails the step once they are yielded.
        context.instance.add_run_tags(context.run_id, outcome_tags(report))
        delivery = f"{provider}/{delivery_id}"
        validations = hub_context.storage.quality_summary(provider, delivery_id) or {}
        for dataset, rows in report.rows_by_dataset().items():
            key = raw_asset_key(dataset)
            if key not in context.selected_asset_keys:
                context.log.warning(f"{dataset} is in delivery {delivery} but not in this run's selection.")
                continue
            yield _materialization(report, dataset, rows, hub_context.storage.raw_glob)
            if dg.AssetCheckKey(key, CHECK_NAME) in context.selected_asset_check_keys:
                yield delivery_check_result(key, dataset, validations, delivery)

    return ingest_delivery_asset


ingest_delivery_assets = build_ingest_delivery(
    [default_registry().resolve(name) for name in default_registry().names()]
)


QUARANTINE_COLUMNS = [
    "provider",
    "delivery_id",
    "reason",
    "message",
    "file",
    "quarantined_at",
    "run_id",
    "published_manifest_sha256",
]
# Shown in the UI for the latest 50 refusals (the table holds them all).
QUARANTINE_SHOWN = QUARANTINE_COLUMNS[:6]


@dg.asset(
    key=QUARANTINE_KEY,
    group_name=INGESTION_GROUP,
    deps=[INBOX_KEY],
    owners=INGESTION_OWNERS,
    kinds={"parquet"},
    metadata={
        "dagster/column_schema": dg.TableSchema(
            [dg.TableColumn(name, "VARCHAR") for name in QUARANTINE_COLUMNS]
        )
    },
    description="Every quarantined delivery with its machine-readable reason and the explanation "
    "sent to its provider. Refreshed nightly; each refusal also appears here at once as an observation.",
)
def delivery_quarantine(context: dg.AssetExecutionContext, hub: HubResource) -> dg.MaterializeResult:
    storage = hub.storage().prepare()
    records = list(storage.quarantine_records())
    table = pa.table(
        {name: [r.get(name) for r in records] for name in QUARANTINE_COLUMNS},
        schema=pa.schema([(name, pa.string()) for name in QUARANTINE_COLUMNS]),
    )
    target = make_private_dir(storage.root / "quarantine") / "quarantine.parquet"
    temporary = target.with_suffix(".tmp")
    pq.write_table(table, temporary)
    temporary.chmod(PRIVATE_FILE_MODE)
    temporary.replace(target)
    by_reason = Counter(r["reason"] for r in records)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(records),
            "by_reason": dict(by_reason),
            "deliveries": dg.MetadataValue.table(
                [dg.TableRecord({name: r.get(name) for name in QUARANTINE_SHOWN}) for r in records[-50:]],
                schema=dg.TableSchema([dg.TableColumn(name, "string") for name in QUARANTINE_SHOWN]),
            ),
            "path": dg.MetadataValue.path(str(target)),
        }
    )
