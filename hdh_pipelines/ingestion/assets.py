"""Ingestion: a delivery partition becomes raw tables, or a quarantine record.

``ingest_delivery`` is one multi-asset with a raw table per registry dataset;
a run materialises the tables its delivery holds. Any breach of the contract
fails the run with the reason in its metadata, records the delivery in
quarantine and publishes nothing of it.
"""

from collections import Counter

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from hdh_deliver.errors import DeliveryRejected
from hdh_pipelines.core.private_files import PRIVATE_FILE_MODE, make_private_dir
from hdh_pipelines.ingestion.partitions import DELIVERIES, MANIFEST_DIGEST_TAG, parse_delivery_partition_key
from hdh_pipelines.ingestion.pipeline import IngestionReport, LoadedFile, ingest_delivery
from hdh_pipelines.ingestion.raw_store import LINEAGE_COLUMNS
from hdh_pipelines.ingestion.receive import SftpDeliverySource
from hdh_pipelines.ingestion.resources import HubResource, SftpResource
from hdh_pipelines.registry import DatasetSchema, default_registry

RAW_GROUP = "raw"
INGESTION_OWNERS = ["team:data-engineering"]
QUARANTINE_KEY = dg.AssetKey(["ingestion", "delivery_quarantine"])


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
        metadata={
            "dataset": schema.name,
            "family": schema.family,
            "dagster/column_schema": _column_schema(schema),
        },
        tags={"hdh/layer": "raw"},
    )


def _files_table(files: list[LoadedFile]) -> dg.MetadataValue:
    header = (
        "| file | delivered as | rows | encrypted bytes | plaintext bytes | ciphertext SHA-256 "
        "| decrypt s | load s |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {f.name} | {f.dataset} | {f.rows} | {f.ciphertext_bytes} | {f.plaintext_bytes} "
        f"| `{f.ciphertext_sha256[:16]}…` | {f.decrypt_seconds} | {f.load_seconds} |"
        for f in files
    ]
    return dg.MetadataValue.md(header + "\n".join(lines))


def _quality_status(report: IngestionReport, dataset: str) -> str:
    if dataset not in report.quality_passed:
        return "not validated (quality gate off)"
    if report.quality_passed[dataset]:
        return "published: blocking expectations hold"
    return "held: a blocking expectation failed; see the check great_expectations_suite"


def _materializations(report: IngestionReport, glob_of) -> list[dg.MaterializeResult]:
    results = []
    for dataset, rows in report.rows_by_dataset().items():
        files = [f for f in report.files if f.registry_dataset == dataset]
        results.append(
            dg.MaterializeResult(
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
        )
    return results


def build_ingest_delivery(registry_schemas: list[DatasetSchema]) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="ingest_delivery",
        specs=[_raw_spec(schema) for schema in registry_schemas],
        partitions_def=DELIVERIES,
        can_subset=False,
        op_tags={"hdh/kind": "ingestion"},
        # Transient faults (server gone mid-download, disk full) are retried;
        # a contract breach raises Failure(allow_retries=False) and is not.
        retry_policy=dg.RetryPolicy(max_retries=2, delay=20, backoff=dg.Backoff.EXPONENTIAL),
        description="Download, verify, decrypt and load one SFTP delivery (hdh-delivery/1) into raw tables.",
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
        yield from _materializations(report, hub_context.storage.raw_glob)

    return ingest_delivery_asset


ingest_delivery_assets = build_ingest_delivery(
    [default_registry().resolve(name) for name in default_registry().names()]
)


@dg.asset(
    key=QUARANTINE_KEY,
    group_name="ingestion",
    owners=INGESTION_OWNERS,
    kinds={"parquet"},
    description="Every quarantined delivery with its machine-readable reason and the explanation "
    "sent to its provider. Refreshed nightly; each refusal also appears here at once as an observation.",
)
def delivery_quarantine(context: dg.AssetExecutionContext, hub: HubResource) -> dg.MaterializeResult:
    storage = hub.storage().prepare()
    records = list(storage.quarantine_records())
    fields = [
        "provider",
        "delivery_id",
        "reason",
        "message",
        "file",
        "quarantined_at",
        "run_id",
        "published_manifest_sha256",
    ]
    table = pa.table(
        {name: [r.get(name) for r in records] for name in fields},
        schema=pa.schema([(name, pa.string()) for name in fields]),
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
            "deliveries": dg.MetadataValue.md(
                "| provider | delivery | reason | explanation |\n|---|---|---|---|\n"
                + "\n".join(
                    f"| {r['provider']} | {r['delivery_id']} | `{r['reason']}` | {r['message']} |"
                    for r in records[-50:]
                )
            ),
            "path": dg.MetadataValue.path(str(target)),
        }
    )
