"""Catalogue assets: HealthDCAT-AP records, SHACL result and the static site, downstream of every dataset.

Thin shell over ``hdh_pipelines.catalogue``: the asset depends on the raw
tables (``raw/<dataset>``), the dbt models (``marts/<model>``, ``omop/<model>``)
and the open dataset (``open_science/open_dispensations``) it describes, so it
re-materialises after each nightly run, and reports the record count, the SHACL
result and where the site is.
"""

from datetime import date
from pathlib import Path

import dagster as dg

from hdh_pipelines.catalogue import CatalogueInputs, CatalogueInvalid, ValidatorNotFound, build_catalogue
from hdh_pipelines.catalogue.cartography import GraphvizMissing
from hdh_pipelines.catalogue.resources import CatalogueResource
from hdh_pipelines.catalogue.snds_reference import SndsReferenceMissing
from hdh_pipelines.catalogue.sources import raw_descriptions, warehouse_descriptions
from hdh_pipelines.core.constants import WAREHOUSE_POOL
from hdh_pipelines.ingestion.resources import HubResource
from hdh_pipelines.normalisation.resources import WarehouseResource
from hdh_pipelines.registry import default_registry

OPEN_DISPENSATIONS_KEY = dg.AssetKey(["open_science", "open_dispensations"])
PROJECT_DIRECTORY_KEY = dg.AssetKey(["rights", "project_directory"])


def _described_keys() -> list[dg.AssetKey]:
    identifiers = [d.identifier for d in raw_descriptions(default_registry()) + warehouse_descriptions()]
    # The open datasets are found in their folder at run time; the asset that publishes them is known.
    return [dg.AssetKey(identifier.split("/")) for identifier in identifiers] + [
        OPEN_DISPENSATIONS_KEY,
        PROJECT_DIRECTORY_KEY,
    ]


@dg.asset(
    key=dg.AssetKey(["catalogue", "healthdcat_catalogue"]),
    deps=_described_keys(),
    group_name="catalogue",
    owners=["team:data-engineering"],
    kinds={"rdf", "html"},
    description="HealthDCAT-AP records (Turtle, JSON-LD) of every dataset and SNDS product, validated with "
    "SHACL, and the static catalogue site with the SNDS dictionary and its cartography.",
    # It reads the warehouse, which DuckDB will not open while dbt writes it.
    pool=WAREHOUSE_POOL,
)
def healthdcat_catalogue(
    context: dg.AssetExecutionContext,
    catalogue: CatalogueResource,
    hub: HubResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    output = Path(catalogue.output_dir).resolve()
    inputs = CatalogueInputs(
        raw_root=hub.storage().raw_root,
        warehouse=warehouse.warehouse(),
        validator_dir=Path(catalogue.validator_dir) if catalogue.validator_dir else None,
        open_data_dir=Path(catalogue.open_data_dir) if catalogue.open_data_dir else None,
    )
    try:
        with warehouse.exclusive():
            build = build_catalogue(inputs, output, today=date.today())
    except (CatalogueInvalid, ValidatorNotFound, SndsReferenceMissing, GraphvizMissing) as error:
        raise dg.Failure(
            description=str(error),
            metadata={"reason": error.reason, "message": str(error)},
            allow_retries=False,
        ) from error
    context.log.info(f"Catalogue of {build.records} datasets published in {build.folder}.")
    return dg.MaterializeResult(
        metadata={
            "record_count": build.records,
            "shacl_violations": build.violations,
            "shacl_warnings": build.warnings,
            "shacl_levels": ", ".join(level.value for level in build.results),
            "site": dg.MetadataValue.path(str(build.folder / "index.html")),
            "catalogue_turtle": dg.MetadataValue.path(str(build.folder / "catalogue.ttl")),
        }
    )
