"""Normalisation's resources: the dbt project and its CLI, and the warehouse that dbt builds and later
stages read, whatever engine built it."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
from dagster_dbt import DbtCliResource
from pydantic import Field

from hdh_pipelines.core.private_files import held_lock, make_private_dir
from hdh_pipelines.normalisation.manifest import dbt_project
from hdh_pipelines.normalisation.warehouse import Warehouse, open_warehouse

# What a step logs when another holds the warehouse (its run's log shows why it has not started dbt).
WAREHOUSE_WAIT_MESSAGE = "Another step holds the warehouse: this one starts when it is done."


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=dbt_project)


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse of the configured engine (``normalisation.warehouse``). On DuckDB, the file takes one
    writer process at a time, and no reader while it writes: every step that opens it belongs to the
    concurrency pool ``duckdb_warehouse`` and runs inside ``exclusive()``."""

    path: str = Field(description="The DuckDB warehouse file (the dbt profile's HDH_WAREHOUSE_PATH).")
    engine: str = Field(default="duckdb", description="duckdb or spark: HDH_WAREHOUSE_ENGINE, as for dbt.")
    spark_warehouse_dir: str | None = Field(
        default=None,
        description="Spark only: dbt-spark's Parquet tables (HDH_SPARK_WAREHOUSE_DIR), a folder or a "
        "file://, s3a:// or abfss:// URI.",
    )

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the DuckDB warehouse for the length of a step; a step of another run waits meanwhile.

        The pool shows the steps queued in the UI, but it is not a mutex: two
        steps claiming its one free slot at the same moment can both get it
        (Dagster reads a free slot, then writes its claim; SQLite has no row lock
        in between, and on PostgreSQL the read's ``FOR UPDATE`` ends with its
        statement, the connection being in autocommit. Measured with the local
        instance: both got the slot in 26 of 100 simultaneous claims under load;
        seen once on PostgreSQL in a test suite). DuckDB would then fail the
        second on its file lock. This lock, on a file beside the warehouse, is
        the one that cannot be shared: the second step waits here instead. The
        Spark engine writes no DuckDB file, so it holds nothing.
        """
        if self.engine != "duckdb":
            yield
            return
        path = Path(self.path)
        if not path.parent.exists():
            make_private_dir(path.parent)
        with held_lock(
            path.with_name(f"{path.name}.lock"),
            on_wait=lambda: dg.get_dagster_logger().info(WAREHOUSE_WAIT_MESSAGE),
        ):
            yield

    def warehouse(self) -> Warehouse:
        return open_warehouse(self.engine, Path(self.path), self.spark_warehouse_dir)

    @contextmanager
    def read_only(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection holding every model as ``<schema>.<table>``, closed on exit."""
        with self.warehouse().read_only() as connection:
            yield connection

    def read_table(self, relation: str) -> pa.Table:
        return self.warehouse().read_table(relation)
