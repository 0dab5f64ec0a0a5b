"""Spark and linkage-storage configuration for the linkage assets.

``SparkResource`` builds the session the way ``dagster_pyspark.PySparkResource``
does (``spark_session_from_config``), from named settings instead of a free
dictionary: the master, driver memory and shuffle partitions must be set
before the first session of the process starts (a running JVM ignores a
later driver memory), and Spark's scratch folder holds row-level data, so it
belongs in the hub's private storage.
"""

from typing import Any

import dagster as dg
from dagster_pyspark.resources import spark_session_from_config
from pydantic import Field


class SparkResource(dg.ConfigurableResource):
    """Where and how Spark runs: ``local[*]`` here, ``spark://host:7077`` or ``k8s://…`` on a cluster."""

    master: str = Field(default="local[*]", description="spark.master: local[*], spark://…, k8s://https://….")
    driver_memory: str = Field(default="4g", description="spark.driver.memory (Spark's default is 1g).")
    shuffle_partitions: int = Field(
        default=8, description="spark.sql.shuffle.partitions (Spark's default of 200 suits big clusters)."
    )
    local_dir: str | None = Field(
        default=None, description="spark.local.dir: shuffle and spill files; put it in private storage."
    )
    extra_config: dict[str, str] = Field(
        default_factory=dict,
        description="Other Spark settings, e.g. spark.executor.memory, spark.kubernetes.container.image.",
    )

    def spark_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "spark.master": self.master,
            "spark.app.name": "hdh-linkage",
            "spark.driver.memory": self.driver_memory,
            "spark.sql.shuffle.partitions": str(self.shuffle_partitions),
            "spark.ui.showConsoleProgress": "false",
            # Parquet timestamps and dates are read and written as they are, whatever the time zone.
            "spark.sql.session.timeZone": "UTC",
        }
        if self.local_dir:
            config["spark.local.dir"] = self.local_dir
        return config | dict(self.extra_config)

    def session(self) -> Any:
        """The process's Spark session (created on first use, reused after)."""
        return spark_session_from_config(self.spark_config())


class LinkageStorageResource(dg.ConfigurableResource):
    """The warehouse the linkage reads and publishes to, and the folder Spark reads and writes."""

    warehouse_path: str = Field(description="The DuckDB warehouse file (HDH_WAREHOUSE_PATH).")
    linkage_root: str = Field(
        description="Folder (or file:// URI) for staged inputs and outputs, visible to every Spark node; "
        "e.g. <private root>/linkage locally, a shared mount on a cluster."
    )
