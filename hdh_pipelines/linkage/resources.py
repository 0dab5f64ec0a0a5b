"""Spark and linkage-storage configuration for the linkage assets.

Spark runs through ``dagster_pyspark.PySparkResource``; ``spark_config``
builds its configuration from named settings instead of a free dictionary:
the master, driver memory and shuffle partitions must be set before the first
session of the process starts (a running JVM ignores a later driver memory),
and Spark's scratch folder holds row-level data, so it belongs in the hub's
private storage.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from hdh_pipelines.normalisation.resources import WarehouseResource

# For a few thousand rows: a linkage run then makes about 180 Spark jobs and compiles 400 classes whatever
# its size, and the JVM's warm-up dominates (measured in docs/performance.md, "The linkage tests' CPU").
# Spark's defaults are kept for real data: on a cluster and a long-lived JVM, they pay off.
SMALL_INPUT_SETTINGS = {
    # Adaptive execution re-plans each query stage by stage: three times the jobs, for partitions
    # already sized for the data.
    "spark.sql.adaptive.enabled": "false",
    # Code generation compiles Java classes (Janino) for each stage and, below it, for each projection
    # and predicate: more than interpreting them costs on these rows. Spark's own tests run both paths,
    # which give the same results.
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    # The JVM's optimising compiler (C2) pays off only in a longer-lived JVM; the serial collector has
    # no concurrent threads competing for the cores. C1 alone shrinks the code cache's default to 48 MB,
    # which a session's worth of Spark fills ("Out of space in CodeCache", and the SparkContext stops):
    # the tiered default of 240 MB, set back. dbt_project/profiles.yml sets the same for dbt on Spark.
    "spark.driver.extraJavaOptions": (
        "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m -XX:+UseSerialGC"
    ),
}


def spark_config(
    *,
    master: str = "local[*]",
    driver_memory: str = "4g",
    shuffle_partitions: int = 8,
    local_dir: str | None = None,
    small_inputs: bool = False,
    extra: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``spark_config`` of a ``PySparkResource`` for the hub.

    ``master``: ``local[*]`` here, ``spark://host:7077`` or ``k8s://…`` on a
    cluster. ``driver_memory``: Spark's default is 1g. ``shuffle_partitions``:
    Spark's default of 200 suits big clusters, not 2 cores. ``local_dir``:
    shuffle and spill files hold row-level data, so it belongs in private
    storage. ``small_inputs``: settings for a few thousand rows (the demo, the
    tests), where a run's CPU goes to fixed costs, not to rows; the same switch
    as the dbt profile's ``HDH_SPARK_SMALL_INPUTS``. ``extra``: anything else
    (``spark.executor.memory``, ``spark.kubernetes.container.image``…).
    """
    config: dict[str, Any] = {
        "spark.master": master,
        "spark.app.name": "hdh-linkage",
        "spark.driver.memory": driver_memory,
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.ui.showConsoleProgress": "false",
        # Parquet timestamps and dates are read and written as they are, whatever the time zone.
        "spark.sql.session.timeZone": "UTC",
    }
    if local_dir:
        config["spark.local.dir"] = local_dir
    if small_inputs:
        config |= SMALL_INPUT_SETTINGS
    return config | dict(extra or {})


class LinkageStorageResource(dg.ConfigurableResource):
    """The warehouse the linkage reads and publishes to (the same resource every reader uses, whatever the
    engine), and the root Spark reads and writes."""

    warehouse: WarehouseResource
    linkage_root: str = Field(
        description="Folder, file://, s3a:// or abfss:// URI for staged inputs and outputs, visible to every "
        "Spark node; e.g. <private root>/linkage locally, a shared mount or a bucket on a cluster."
    )
