"""The hub's metadata catalogue: a pure core and its Dagster shell (``assets``, ``resources``).

HealthDCAT-AP records for every dataset (rdflib; Turtle and JSON-LD), validated
with pySHACL against the HealthDCAT-AP shapes at the record's access level;
aggregate statistics measured in DuckDB SQL with small-count suppression; a
static HTML site with client-side search, the dictionary of the whole SNDS read
from its references, and a Graphviz cartography of its tables and join keys
beside the hub's lineage. ``build_catalogue`` does all of it into one folder,
published atomically. See docs/catalogue.md.
"""

from hdh_pipelines.catalogue.build import (
    CatalogueBuild,
    CatalogueInputs,
    CatalogueInvalid,
    build_catalogue,
)
from hdh_pipelines.catalogue.model import DatasetDescription, Layer
from hdh_pipelines.catalogue.records import HubIdentity
from hdh_pipelines.catalogue.shacl import AccessLevel, ShaclResult, ValidatorNotFound, validate

__all__ = [
    "AccessLevel",
    "CatalogueBuild",
    "CatalogueInputs",
    "CatalogueInvalid",
    "DatasetDescription",
    "HubIdentity",
    "Layer",
    "ShaclResult",
    "ValidatorNotFound",
    "build_catalogue",
    "validate",
]
