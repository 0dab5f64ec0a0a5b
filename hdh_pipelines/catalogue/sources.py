"""Dataset descriptions from the registry (raw tables) and from the dbt project (marts, OMOP).

Raw tables: the registry's Table Schema gives title, description, columns,
keys and foreign keys (the join links). Warehouse tables: the dbt models' YAML
gives descriptions and columns, its ``relationships`` tests the join links, and
the models' SQL (``ref``, ``raw_rows``/``source``) the lineage back to the raw
tables, through staging and intermediate models that are not catalogued.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from hdh_pipelines.catalogue.model import DatasetDescription, JoinLink, Layer, Variable
from hdh_pipelines.catalogue.nomenclatures import codes_of
from hdh_pipelines.core.paths import DBT_PROJECT_DIR
from hdh_pipelines.registry import DatasetRegistry, DatasetSchema

# dbt schemas whose models the catalogue describes, with their layer.
CATALOGUED_SCHEMAS = {"marts": Layer.MARTS, "omop": Layer.OMOP}
_REF = re.compile(r"""\bref\(\s*['"](\w+)['"]\s*\)""")
_RAW = re.compile(r"""\b(?:raw_rows\(\s*|source\(\s*['"]raw['"]\s*,\s*)['"](\w+)['"]""")
_ALIAS = re.compile(r"""\balias\s*=\s*['"](\w+)['"]""")
_PERSON_COLUMNS = ("ben_idt_ano", "person_id")
_BIRTH_OR_AGE = re.compile(r"(NAI_ANN|AGE_ANN|birth_year|year_of_birth|age_years)$", re.IGNORECASE)
_ALGORITHM_VERSION = re.compile(r"""set\s+algorithm_version\s*=\s*['"]([^'"]+)['"]""")
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
        nomenclature, coding_system = codes_of(schema.name, column.name)
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


def _model_yaml(project_dir: Path) -> dict[str, tuple[str, dict]]:
    """Model name -> (dbt schema, YAML entry) for the catalogued schemas."""
    models = {}
    for path in sorted((project_dir / "models").rglob("_*.yml")):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise CatalogueSourceError(f"{path}: not readable YAML ({error}).") from error
        folder = path.parent.relative_to(project_dir / "models").parts
        schema = folder[-1] if folder else ""
        for entry in document.get("models", []):
            models[entry["name"]] = (schema, entry)
    return models


def _model_sql(project_dir: Path) -> dict[str, str]:
    return {path.stem: path.read_text(encoding="utf-8") for path in (project_dir / "models").rglob("*.sql")}


def _dependencies(sql_of: Mapping[str, str]) -> dict[str, tuple[set[str], set[str]]]:
    """Model name -> (models it refs, raw sources it reads)."""
    return {
        model: (set(_REF.findall(sql)), {name.lower() for name in _RAW.findall(sql)})
        for model, sql in sql_of.items()
    }


def _upstream(
    model: str, graph: Mapping[str, tuple[set[str], set[str]]], catalogued: Mapping[str, str]
) -> set[str]:
    """Identifiers of the nearest catalogued ancestors of ``model``: raw tables and marts/OMOP models.

    Staging and intermediate models are walked through, not listed.
    """
    found: set[str] = set()
    seen: set[str] = set()
    pending = list(graph.get(model, (set(), set()))[0])
    found |= {f"raw/{name}" for name in graph.get(model, (set(), set()))[1]}
    while pending:
        parent = pending.pop()
        if parent in seen:
            continue
        seen.add(parent)
        if parent in catalogued:
            found.add(catalogued[parent])
            continue
        refs, raws = graph.get(parent, (set(), set()))
        found |= {f"raw/{name}" for name in raws}
        pending.extend(refs)
    return found


def _relationship_links(identifier: str, entry: Mapping, identifiers: Mapping[str, str]) -> list[JoinLink]:
    links = []
    for column in entry.get("columns", []):
        for test in column.get("data_tests", []) or []:
            if isinstance(test, dict) and "relationships" in test:
                arguments = test["relationships"].get("arguments", test["relationships"])
                target = _REF.search(arguments.get("to", ""))
                if target and target.group(1) in identifiers:
                    links.append(
                        JoinLink(
                            identifier, identifiers[target.group(1)], (column["name"],), (arguments["field"],)
                        )
                    )
    for test in entry.get("data_tests", []) or []:
        if isinstance(test, dict) and "composite_relationship" in test:
            arguments = test["composite_relationship"].get("arguments", {})
            target = _REF.search(arguments.get("to", ""))
            if target and target.group(1) in identifiers:
                columns = tuple(arguments["columns"])
                links.append(JoinLink(identifier, identifiers[target.group(1)], columns, columns))
    return links


def _event_date(columns: Iterable[str]) -> str | None:
    names = list(columns)
    starts = [c for c in names if c.endswith("_start_date")]
    others = [c for c in names if c.endswith("_date") and not re.search(r"death|birth|end", c)]
    return (starts or others or [None])[0]


def warehouse_descriptions(project_dir: Path = DBT_PROJECT_DIR) -> list[DatasetDescription]:
    """One description per documented model of the marts and omop schemas."""
    models = {
        name: (schema, entry)
        for name, (schema, entry) in _model_yaml(project_dir).items()
        if schema in CATALOGUED_SCHEMAS
    }
    identifiers = {name: f"{schema}/{name}" for name, (schema, _entry) in models.items()}
    sql_of = _model_sql(project_dir)
    graph = _dependencies(sql_of)
    descriptions = []
    for name, (schema, entry) in sorted(models.items()):
        identifier = identifiers[name]
        columns = [c["name"] for c in entry.get("columns", [])]
        variables = []
        for column in entry.get("columns", []):
            nomenclature, coding_system = codes_of(name, column["name"])
            variables.append(
                Variable(
                    column["name"],
                    column.get("data_type", ""),
                    " ".join(str(column.get("description", "")).split()),
                    nomenclature,
                    coding_system,
                )
            )
        layer = CATALOGUED_SCHEMAS[schema]
        alias = _ALIAS.search(sql_of.get(name, ""))
        descriptions.append(
            DatasetDescription(
                identifier=identifier,
                name=name,
                title=f"{'OMOP CDM 5.4' if layer is Layer.OMOP else 'Mart'}: {name.replace('_', ' ')}",
                description=" ".join(str(entry.get("description", "")).split()),
                layer=layer,
                family="OMOP" if layer is Layer.OMOP else "SNDS",
                variables=tuple(variables),
                links=tuple(_relationship_links(identifier, entry, identifiers)),
                person_columns=tuple(c for c in _PERSON_COLUMNS if c in columns)[:1],
                event_date=_event_date(columns),
                derived_from=tuple(sorted(_upstream(name, graph, identifiers) - {identifier})),
                keywords=(layer.value, name, "pseudonymised", *(("OMOP",) if layer is Layer.OMOP else ())),
                relation=f"{schema}.{alias.group(1) if alias else name}",
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


def algorithm_fiches(project_dir: Path = DBT_PROJECT_DIR) -> list[AlgorithmFiche]:
    """The fiche of every targeting algorithm: its YAML meta, and the version its SQL sets."""
    sql_of = _model_sql(project_dir)
    fiches = []
    for name, (schema, entry) in sorted(_model_yaml(project_dir).items()):
        if schema != "algorithms":
            continue
        meta = entry.get("config", {}).get("meta", {})
        version = _ALGORITHM_VERSION.search(sql_of.get(name, ""))
        fiches.append(
            AlgorithmFiche(
                name=name,
                description=" ".join(str(entry.get("description", "")).split()),
                version=version.group(1) if version else "",
                reference=str(meta.get("reference", "")),
                parts={part: str(meta.get("fiche", {}).get(part, "")) for part in FICHE_PARTS},
            )
        )
    return fiches
