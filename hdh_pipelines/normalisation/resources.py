"""Normalisation's resources: the dbt project and its CLI, and the DuckDB warehouse that dbt builds and
later stages read."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_dbt import DbtCliResource
from pydantic import Field

from hdh_pipelines.normalisation.manifest import dbt_project


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=dbt_project)


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse file. DuckDB takes one writer process at a time, and no reader while it writes:
    every asset that opens it belongs to the concurrency pool ``duckdb_warehouse``."""

    path: str = Field(description="The DuckDB warehouse file (the dbt profile's HDH_WAREHOUSE_PATH).")

    @contextmanager
    def read_only(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection, closed (and the file's lock released) on exit."""
        connection = duckdb.connect(str(Path(self.path)), read_only=True)
        try:
            yield connection
        finally:
            connection.close()
