"""Dagster resources: thin, configurable wrappers over the pure library."""

from hdh_pipelines.resources.hub import HubResource
from hdh_pipelines.resources.sftp import SftpResource
from hdh_pipelines.resources.warehouse import WarehouseResource

__all__ = ["HubResource", "SftpResource", "WarehouseResource"]
