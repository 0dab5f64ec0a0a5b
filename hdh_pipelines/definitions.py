"""Every definition of the code location, assembled in one place."""

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def _garbage_collection_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while the modules that build the definitions are imported.

    Loading allocates a few hundred thousand objects that live as long as the process (Dagster, dbt,
    the parsed manifest, ~400 assets and their checks) and frees almost none, so the collector's passes
    over them find nothing yet cost about a quarter of the load's CPU (docs/performance.md, "Code
    location load"). Every process that loads the code location pays it: webserver, daemon, code
    server, run workers and step processes. Collection resumes once the modules are loaded.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


with _garbage_collection_paused():
    import dagster as dg
    from dagster_pyspark import PySparkResource

    from hdh_pipelines.catalogue.assets import healthdcat_catalogue
    from hdh_pipelines.catalogue.resources import CatalogueResource
    from hdh_pipelines.ingestion.assets import delivery_quarantine, ingest_delivery_assets, sftp_inbox
    from hdh_pipelines.ingestion.resources import HubResource, SftpResource
    from hdh_pipelines.ingestion.sensors import sftp_inbox_sensor
    from hdh_pipelines.jobs import ingest_delivery_job, nightly_job
    from hdh_pipelines.linkage.assets import cohort_linkage
    from hdh_pipelines.linkage.resources import LinkageStorageResource, spark_config
    from hdh_pipelines.normalisation.assets import normalisation_assets, snds_staging_automation
    from hdh_pipelines.normalisation.checks import cip13_mapped_to_atc
    from hdh_pipelines.normalisation.resources import WarehouseResource, dbt_resource
    from hdh_pipelines.open_science.assets import (
        data_challenge,
        indicator_job,
        open_dispensations,
        synthetic_snds,
    )
    from hdh_pipelines.open_science.resources import OpenScienceResource
    from hdh_pipelines.rights.assets import rights_assets, rights_request_job, rights_request_sensor
    from hdh_pipelines.rights.opt_out_purge import opt_out_purge_job, workspace_retention_job
    from hdh_pipelines.rights.resources import RightsResource
    from hdh_pipelines.rights.sensors import opt_out_purge_sensor
    from hdh_pipelines.schedules import nightly_schedule
    from hdh_pipelines.workspaces.assets import project_workspace, workspace_audit_trail
    from hdh_pipelines.workspaces.resources import WorkspaceResource
    from hdh_pipelines.workspaces.sensors import project_registry_sensor

# One engine configuration for dbt's readers: the resource itself and the workspaces that read through it.
warehouse = WarehouseResource(
    path=dg.EnvVar("HDH_WAREHOUSE_PATH"),
    engine=os.environ.get("HDH_WAREHOUSE_ENGINE", "duckdb"),
    spark_warehouse_dir=os.environ.get("HDH_SPARK_WAREHOUSE_DIR"),
)

defs = dg.Definitions(
    assets=[
        sftp_inbox,
        ingest_delivery_assets,
        delivery_quarantine,
        *normalisation_assets,
        cohort_linkage,
        healthdcat_catalogue,
        project_workspace,
        workspace_audit_trail,
        open_dispensations,
        data_challenge,
        synthetic_snds,
        *rights_assets,
    ],
    asset_checks=[cip13_mapped_to_atc],
    jobs=[
        ingest_delivery_job,
        nightly_job,
        indicator_job,
        opt_out_purge_job,
        workspace_retention_job,
        rights_request_job,
    ],
    sensors=[
        sftp_inbox_sensor,
        project_registry_sensor,
        opt_out_purge_sensor,
        rights_request_sensor,
        snds_staging_automation,
    ],
    schedules=[nightly_schedule],
    resources={
        "catalogue": CatalogueResource(
            output_dir=dg.EnvVar("HDH_CATALOGUE_DIR"), open_data_dir=dg.EnvVar("HDH_OPEN_DATA_DIR")
        ),
        "open_science": OpenScienceResource(
            indicator_root=dg.EnvVar("HDH_INDICATOR_ROOT"),
            request_log=dg.EnvVar("HDH_INDICATOR_LOG"),
            public_root=dg.EnvVar("HDH_OPEN_DATA_DIR"),
            challenge_root=dg.EnvVar("HDH_CHALLENGE_ROOT"),
            challenge_key=dg.EnvVar("HDH_CHALLENGE_KEY"),
        ),
        # Not secrets: plain settings with defaults for the embedded local Spark.
        "spark": PySparkResource(
            spark_config=spark_config(
                master=os.environ.get("HDH_SPARK_MASTER", "local[*]"),
                driver_memory=os.environ.get("HDH_SPARK_DRIVER_MEMORY", "4g"),
                shuffle_partitions=int(os.environ.get("HDH_SPARK_SHUFFLE_PARTITIONS", "8")),
                small_inputs=os.environ.get("HDH_SPARK_SMALL_INPUTS", "false") == "true",
            )
        ),
        "linkage_storage": LinkageStorageResource(
            warehouse=warehouse, linkage_root=dg.EnvVar("HDH_LINKAGE_ROOT")
        ),
        "sftp": SftpResource(
            host=dg.EnvVar("HDH_SFTP_HOST"),
            port=dg.EnvVar.int("HDH_SFTP_PORT"),
            user=dg.EnvVar("HDH_SFTP_USER"),
            private_key_file=dg.EnvVar("HDH_SFTP_KEY_FILE"),
            known_hosts_file=dg.EnvVar("HDH_SFTP_KNOWN_HOSTS"),
            inbox_root=dg.EnvVar("HDH_SFTP_INBOX"),
        ),
        "dbt": dbt_resource(),
        "warehouse": warehouse,
        "workspaces": WorkspaceResource(
            root=dg.EnvVar("HDH_WORKSPACE_ROOT"),
            warehouse=warehouse,
            projects_dir=dg.EnvVar("HDH_PROJECTS_DIR"),
            audit_root=dg.EnvVar("HDH_WORKSPACE_AUDIT_ROOT"),
        ),
        "rights": RightsResource(
            intake_dir=dg.EnvVar("HDH_RIGHTS_INTAKE"),
            forms_registry_file=dg.EnvVar("HDH_RIGHTS_FORMS"),
        ),
        "hub": HubResource(
            private_root=dg.EnvVar("HDH_PRIVATE_ROOT"),
            keyring_file=dg.EnvVar("HDH_HUB_KEYRING"),
            provider_registry_file=dg.EnvVar("HDH_PROVIDER_REGISTRY"),
        ),
    },
)
