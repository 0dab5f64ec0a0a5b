"""Dataset descriptions from the registry (raw tables) and from the dbt project (marts, OMOP).

Raw tables: the registry's Table Schema gives title, description, columns,
keys and foreign keys (the join links). Warehouse tables: the dbt manifest
(``hdh_pipelines/normalisation/manifest.py``) gives descriptions, columns and
their types, relations, the join links of its ``relationships`` tests, and the
lineage back to the raw tables, through staging and intermediate models that
are not catalogued.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hdh_pipelines.catalogue.model import DatasetDescription, JoinLink, Layer, Variable
from hdh_pipelines.catalogue.nomenclatures import codes_of
from hdh_pipelines.normalisation.manifest import DbtManifest, DbtModel, read_manifest
from hdh_pipelines.registry import DatasetRegistry, DatasetSchema

# dbt schemas whose models the catalogue describes, with their layer.
CATALOGUED_SCHEMAS = {"marts": Layer.MARTS, "omop": Layer.OMOP}
_PERSON_COLUMNS = ("ben_idt_ano", "person_id")
_BIRTH_OR_AGE = re.compile(r"(NAI_ANN|AGE_ANN|birth_year|year_of_birth|age_years)$", re.IGNORECASE)
# The parts of an algorithm's fiche (meta.fiche of models/algorithms/_algorithms__models.yml), in page order.
FICHE_PARTS = ("definition", "data", "codes", "source", "limits")


class CatalogueSourceError(ValueError):
    """The dbt project cannot be read as the catalogue expects; ``reason`` is machine-readable."""

    reason = "catalogue_source_unreadable"


def raw_identifier(dataset_name: str) -> str:
    return f"raw/{dataset_name.lower()}"


def _raw_description(schema: DatasetSchema, registry: DatasetRegistry) -> DatasetDescription:
    identifier = raw_identifier(schema.name)
    links = []
    for fk in schema.foreign_keys:
        target = registry.resolve(fk.resource)
        links.append(JoinLink(identifier, raw_identifier(target.name), fk.fields, fk.reference_fields))
    variables = []
    for column in schema.fields:
        nomenclature, coding_system = codes_of(column.name, column.nomenclature)
        variables.append(Variable(column.name, column.type, column.description, nomenclature, coding_system))
    family = schema.family
    return DatasetDescription(
        identifier=identifier,
        name=schema.name,
        title=schema.title,
        description=schema.description,
        layer=Layer.RAW,
        family=family,
        variables=tuple(variables),
        primary_key=schema.primary_key,
        links=tuple(links),
        person_columns=schema.person_id,
        event_date=schema.event_date,
        keywords=(family, schema.name, "raw data", "pseudonymised"),
    )


def raw_descriptions(registry: DatasetRegistry) -> list[DatasetDescription]:
    """One description per registry dataset (a year-templated name such as T_MCOaaB stands for all years)."""
    return [_raw_description(registry.resolve(name), registry) for name in registry.names()]


def _upstream(model: DbtModel, manifest: DbtManifest, catalogued: Mapping[str, str]) -> set[str]:
    """Identifiers of the nearest catalogued ancestors of ``model``: raw tables and marts/OMOP models.

    Staging and intermediate models are walked through, not listed.
    """
    found = {raw_identifier(name) for name in model.raw_sources}
    seen: set[str] = set()
    pending = list(model.parents)
    while pending:
        parent = pending.pop()
        if parent in seen:
            continue
        seen.add(parent)
        if parent in catalogued:
            found.add(catalogued[parent])
            continue
        found |= {raw_identifier(name) for name in manifest.models[parent].raw_sources}
        pending.extend(manifest.models[parent].parents)
    return found


def _event_date(columns: Iterable[str]) -> str | None:
    names = list(columns)
    starts = [c for c in names if c.endswith("_start_date")]
    others = [c for c in names if c.endswith("_date") and not re.search(r"death|birth|end", c)]
    return (starts or others or [None])[0]


def warehouse_descriptions(manifest: DbtManifest | None = None) -> list[DatasetDescription]:
    """One description per model of the marts and omop schemas (the repository's manifest by default)."""
    manifest = manifest or read_manifest()
    models = manifest.in_schemas(*CATALOGUED_SCHEMAS)
    identifiers = {m.name: f"{m.schema}/{m.name}" for m in models}
    descriptions = []
    for model in models:
        identifier = identifiers[model.name]
        columns = [c.name for c in model.columns]
        variables = [
            Variable(column.name, column.data_type, column.description, *codes_of(column.name))
            for column in model.columns
        ]
        layer = CATALOGUED_SCHEMAS[model.schema]
        links = [
            JoinLink(identifier, identifiers[link.target], link.columns, link.target_columns)
            for link in model.links
            if link.target in identifiers
        ]
        descriptions.append(
            DatasetDescription(
                identifier=identifier,
                name=model.name,
                title=f"{'OMOP CDM 5.4' if layer is Layer.OMOP else 'Mart'}: {model.name.replace('_', ' ')}",
                description=model.description,
                layer=layer,
                family="OMOP" if layer is Layer.OMOP else "SNDS",
                variables=tuple(variables),
                links=tuple(links),
                person_columns=tuple(c for c in _PERSON_COLUMNS if c in columns)[:1],
                event_date=_event_date(columns),
                derived_from=tuple(sorted(_upstream(model, manifest, identifiers) - {identifier})),
                keywords=(
                    layer.value,
                    model.name,
                    "pseudonymised",
                    *(("OMOP",) if layer is Layer.OMOP else ()),
                ),
                relation=model.relation,
            )
        )
    return descriptions


def age_column(description: DatasetDescription) -> str | None:
    """The column giving a birth year or an age, by the naming conventions of the SNDS and the marts."""
    return next((v.name for v in description.variables if _BIRTH_OR_AGE.search(v.name)), None)


@dataclass(frozen=True)
class AlgorithmFiche:
    """A targeting algorithm as its fiche documents it (dbt model of the algorithms schema)."""

    name: str
    description: str
    version: str
    reference: str
    parts: Mapping[str, str]


def algorithm_fiches(manifest: DbtManifest | None = None) -> list[AlgorithmFiche]:
    """The fiche of every targeting algorithm: its meta, the version its SQL sets included."""
    fiches = []
    for model in (manifest or read_manifest()).in_schemas("algorithms"):
        fiche = model.meta.get("fiche", {})
        fiches.append(
            AlgorithmFiche(
                name=model.name,
                description=model.description,
                version=str(model.meta.get("algorithm_version", "")),
                reference=str(model.meta.get("reference", "")),
                parts={part: str(fiche.get(part, "")) for part in FICHE_PARTS},
            )
        )
    return fiches
