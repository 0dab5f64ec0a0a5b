"""HealthDCAT-AP records (rdflib) for the catalogue's datasets, and the catalogue that holds them.

One graph per dataset, built from its description, its measured statistics and
its latest quality result; the catalogue graph is their union plus a
``dcat:Catalog``. Only aggregates that passed suppression are written: a
withheld count is simply absent (HealthDCAT-AP makes them optional).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from urllib.parse import quote

from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, PROV, RDF, RDFS, SKOS, XSD

from hdh_pipelines.catalogue.model import (
    DatasetDescription,
    DatasetStatistics,
    Layer,
    OpenLicence,
    QualitySummary,
)
from hdh_pipelines.catalogue.nomenclatures import CODING_SYSTEMS
from hdh_pipelines.catalogue.shacl import AccessLevel
from hdh_pipelines.core.disclosure import DISCLOSURE_THRESHOLD

DCATAP = Namespace("http://data.europa.eu/r5r/")
HEALTHDCATAP = Namespace("http://healthdataportal.eu/ns/health#")
CSVW = Namespace("http://www.w3.org/ns/csvw#")
DPV = Namespace("https://w3id.org/dpv#")
DPV_PD = Namespace("https://w3id.org/dpv/dpv-pd#")
DQV = Namespace("http://www.w3.org/ns/dqv#")
OA = Namespace("http://www.w3.org/ns/oa#")
CV = Namespace("http://data.europa.eu/m8g/")
ELI = Namespace("http://data.europa.eu/eli/ontology#")
ADMS = Namespace("http://www.w3.org/ns/adms#")

EHDS_REGULATION = URIRef("http://data.europa.eu/eli/reg/2025/327/oj")
ACCESS_RIGHTS = {
    AccessLevel.PUBLIC: URIRef("http://publications.europa.eu/resource/authority/access-right/PUBLIC"),
    AccessLevel.NON_PUBLIC: URIRef(
        "http://publications.europa.eu/resource/authority/access-right/NON_PUBLIC"
    ),
    AccessLevel.RESTRICTED: URIRef(
        "http://publications.europa.eu/resource/authority/access-right/RESTRICTED"
    ),
}
HEALTH_THEME = URIRef("http://publications.europa.eu/resource/authority/data-theme/HEAL")
HEALTH_CATEGORIES = "https://hdeu-dcat.data.health.europa.eu/resource/authority/healthcategories/"
COMPLETED = URIRef("http://publications.europa.eu/resource/authority/distribution-status/COMPLETED")
STATISTICAL = URIRef("http://publications.europa.eu/resource/authority/dataset-type/STATISTICAL")
IANA_MEDIA_TYPES = "https://www.iana.org/assignments/media-types/"
# Media type of the one distribution of a row-level dataset (open datasets list theirs, one per file).
MEDIA_TYPES = {
    Layer.RAW: IANA_MEDIA_TYPES + "application/vnd.apache.parquet",
    Layer.MARTS: IANA_MEDIA_TYPES + "application/vnd.duckdb",
    Layer.OMOP: IANA_MEDIA_TYPES + "application/vnd.duckdb",
}
SPDX_LICENCES = "http://spdx.org/licenses/"
ADMS_LICENCE_TYPE = Namespace("http://purl.org/adms/licencetype/")
# ADMS licence type of the open licences the hub publishes under (Licence Ouverte: reuse with attribution).
_LICENCE_TYPES = {"etalab-2.0": ADMS_LICENCE_TYPE.Attribution}
# Table Schema / DuckDB type -> CSVW datatype (https://w3c.github.io/csvw/metadata/#datatypes).
_CSVW_TYPES = {
    "string": "string",
    "varchar": "string",
    "integer": "integer",
    "bigint": "integer",
    "number": "decimal",
    "double": "double",
    "decimal": "decimal",
    "date": "date",
    "datetime": "dateTime",
    "timestamp": "dateTime",
    "boolean": "boolean",
    "year": "gYear",
}
# Personal-data categories (DPV-PD) a variable reveals, by naming convention of the SNDS and the marts.
_PERSONAL_DATA = (
    ("NAI_ANN", DPV_PD.Age),
    ("birth_year", DPV_PD.Age),
    ("year_of_birth", DPV_PD.Age),
    ("AGE_ANN", DPV_PD.Age),
    ("age_years", DPV_PD.Age),
    ("SEX", DPV_PD.Gender),
    ("sex_code", DPV_PD.Gender),
    ("gender", DPV_PD.Gender),
    ("RES_DPT", DPV_PD.Location),
    ("RES_COM", DPV_PD.Location),
    ("residence", DPV_PD.Location),
    ("BDI_", DPV_PD.Location),
    ("DGN", DPV_PD.HealthRecord),
    ("diagnosis", DPV_PD.HealthRecord),
    ("condition", DPV_PD.HealthRecord),
    ("icd10", DPV_PD.HealthRecord),
    ("PHA_", DPV_PD.PrescriptionRecord),
    ("drug", DPV_PD.PrescriptionRecord),
    ("atc", DPV_PD.PrescriptionRecord),
    ("cip13", DPV_PD.PrescriptionRecord),
    ("DCD", DPV_PD.Death),
    ("death", DPV_PD.Death),
)


@dataclass(frozen=True)
class HubIdentity:
    """Who runs the catalogue: the health data access body, its contact, and where records live."""

    base_iri: str = "https://catalogue.health-data-hub.example/"
    name: str = "Health Data Hub (national health data access body)"
    email: str = "data-access@health-data-hub.example"
    contact_page: str = "https://www.health-data-hub.example/access"
    language: str = "fr"

    def iri(self, *parts: str) -> URIRef:
        # Percent-encoded: a code list's column may be named with spaces and accents (Libellé ATC1).
        return URIRef(self.base_iri + "/".join(quote(part, safe="/") for part in parts))


def dataset_iri(hub: HubIdentity, description: DatasetDescription) -> URIRef:
    return hub.iri("dataset", description.identifier)


def _health_category(description: DatasetDescription) -> URIRef:
    if description.layer is Layer.OPEN_DATA:
        return URIRef(HEALTH_CATEGORIES + "NRPE")  # aggregated data on healthcare provision
    if description.family == "EXTERNAL":
        return URIRef(HEALTH_CATEGORIES + "RQSH")  # research cohorts
    return URIRef(HEALTH_CATEGORIES + "HRAD")  # administrative data: claims, dispensations, hospital stays


def _personal_data(description: DatasetDescription) -> set[URIRef]:
    if description.layer is Layer.OPEN_DATA:
        return set()  # protected aggregates: no cell describes a person, whatever its column is named
    found = set()
    for variable in description.variables:
        for fragment, category in _PERSONAL_DATA:
            if fragment.lower() in variable.name.lower():
                found.add(category)
    if description.person_columns:
        found.add(DPV_PD.Identifying)
    return found


def _agent(graph: Graph, hub: HubIdentity) -> URIRef:
    agent, contact = hub.iri("agent", "hub"), hub.iri("agent", "hub", "contact")
    graph.add((agent, RDF.type, FOAF.Agent))
    graph.add((agent, FOAF.name, Literal(hub.name)))
    graph.add((agent, CV.contactPoint, contact))
    graph.add((contact, RDF.type, CV.ContactPoint))
    graph.add((contact, CV.email, Literal(hub.email)))
    graph.add((contact, CV.contactPage, URIRef(hub.contact_page)))
    return agent


def _variables(graph: Graph, hub: HubIdentity, description: DatasetDescription) -> URIRef:
    group, table = (
        hub.iri("variables", description.identifier),
        hub.iri("variables", description.identifier, "table"),
    )
    graph.add((group, RDF.type, CSVW.TableGroup))
    graph.add((group, DCTERMS.title, Literal(f"Variables of {description.name}", lang="en")))
    graph.add((group, CSVW.table, table))
    graph.add((table, RDF.type, CSVW.Table))
    graph.add((table, DCTERMS.title, Literal(description.name)))
    for keyword in description.keywords:
        graph.add((table, DCAT.keyword, Literal(keyword)))
    for variable in description.variables:
        column = hub.iri("variables", description.identifier, variable.name)
        graph.add((table, CSVW.column, column))
        graph.add((column, RDF.type, CSVW.Column))
        graph.add((column, CSVW.name, Literal(variable.name)))
        graph.add((column, CSVW.title, Literal(variable.name)))
        graph.add((column, DCTERMS.description, Literal(variable.description or variable.name)))
        graph.add((column, CSVW.datatype, Literal(_CSVW_TYPES.get(variable.type.lower(), "string"))))
        if variable.coding_system:
            graph.add((column, CSVW.propertyUrl, URIRef(CODING_SYSTEMS[variable.coding_system][0])))
    return group


def _distribution(graph: Graph, hub: HubIdentity, description: DatasetDescription, site_page: str) -> URIRef:
    """The one distribution of a row-level dataset: reachable only through the hub's access procedure."""
    distribution = hub.iri("distribution", description.identifier)
    _distribution_common(graph, distribution, site_page)
    access = (
        "Row-level pseudonymised data: accessible only in the hub's secure processing environment, "
        "under a data permit of the health data access body."
    )
    graph.add((distribution, DCTERMS.title, Literal(f"{description.name} ({description.layer.value})")))
    graph.add((distribution, DCTERMS.description, Literal(access, lang="en")))
    graph.add((distribution, DCAT.accessURL, URIRef(hub.contact_page)))
    graph.add((distribution, DCAT.mediaType, URIRef(MEDIA_TYPES[description.layer])))
    return distribution


def _distribution_common(graph: Graph, distribution: URIRef, site_page: str) -> None:
    graph.add((distribution, RDF.type, DCAT.Distribution))
    graph.add((distribution, DCATAP.applicableLegislation, EHDS_REGULATION))
    graph.add((distribution, ADMS.status, COMPLETED))
    graph.add((distribution, FOAF.page, URIRef(site_page)))


def licence_iri(licence: OpenLicence) -> URIRef:
    return URIRef(SPDX_LICENCES + licence.identifier)


def _licence(graph: Graph, licence: OpenLicence) -> URIRef:
    document = licence_iri(licence)
    graph.add((document, RDF.type, DCTERMS.LicenseDocument))
    graph.add((document, DCTERMS.title, Literal(licence.title)))
    graph.add((document, FOAF.page, URIRef(licence.page)))
    if licence.identifier in _LICENCE_TYPES:
        graph.add((document, DCTERMS.type, _LICENCE_TYPES[licence.identifier]))
    return document


def _open_distributions(
    graph: Graph, hub: HubIdentity, description: DatasetDescription, site_page: str
) -> list[URIRef]:
    """One distribution per published file, downloadable by anyone under the dataset's open licence."""
    licence = _licence(graph, description.licence)
    distributions = []
    for published in description.files:
        distribution = hub.iri("distribution", description.identifier, published.file)
        download = hub.iri("open-data", description.name, published.file)
        _distribution_common(graph, distribution, site_page)
        graph.add((distribution, DCTERMS.title, Literal(published.file)))
        graph.add(
            (
                distribution,
                DCTERMS.description,
                Literal(f"Published as open data under {description.licence.title}.", lang="en"),
            )
        )
        graph.add((distribution, DCAT.accessURL, download))
        graph.add((distribution, DCAT.downloadURL, download))
        graph.add((distribution, DCAT.mediaType, URIRef(IANA_MEDIA_TYPES + published.media_type)))
        graph.add((distribution, DCTERMS.license, licence))
        distributions.append(distribution)
    return distributions


def _temporal(
    graph: Graph, hub: HubIdentity, description: DatasetDescription, stats: DatasetStatistics
) -> None:
    if stats.coverage_start is None or stats.coverage_end is None:
        return
    period = hub.iri("period", description.identifier)
    graph.add((period, RDF.type, DCTERMS.PeriodOfTime))
    graph.add((period, DCAT.startDate, Literal(_day(stats.coverage_start), datatype=XSD.date)))
    graph.add((period, DCAT.endDate, Literal(_day(stats.coverage_end), datatype=XSD.date)))
    graph.add((dataset_iri(hub, description), DCTERMS.temporal, period))


def _day(value: date) -> date:
    return value.date() if hasattr(value, "date") else value


def _provenance(
    graph: Graph,
    hub: HubIdentity,
    description: DatasetDescription,
    stats: DatasetStatistics,
) -> None:
    dataset = dataset_iri(hub, description)
    statement = hub.iri("provenance", description.identifier)
    if description.layer is Layer.RAW:
        deliveries = ", ".join(f"{d.provider}/{d.delivery_id}" for d in stats.deliveries) or "none yet"
        text = (
            f"Delivered by the data controller over the hub's encrypted, signed SFTP channel "
            f"(hdh-delivery/1), "
            f"verified, decrypted and loaded as delivered into Parquet. Deliveries: {deliveries}."
        )
    elif description.layer is Layer.OPEN_DATA:
        upstream = ", ".join(description.derived_from) or "none"
        text = (
            "Aggregated by the hub's open-data publication from the normalised marts, with disclosure "
            f"control: counts under {DISCLOSURE_THRESHOLD} suppressed together with enough complementary "
            "cells that none can "
            f"be recomputed from the totals. Derived from: {upstream}."
        )
    else:
        upstream = ", ".join(description.derived_from) or "none"
        text = (
            "Built by the hub's dbt normalisation (dbt-duckdb) from the raw tables: typed, deduplicated "
            f"(latest delivery wins), persons who opted out excluded. Derived from: {upstream}."
        )
    graph.add((statement, RDF.type, DCTERMS.ProvenanceStatement))
    graph.add((statement, RDFS.label, Literal(text, lang="en")))
    graph.add((dataset, DCTERMS.provenance, statement))
    for upstream_id in description.derived_from:
        graph.add((dataset, PROV.wasDerivedFrom, hub.iri("dataset", upstream_id)))
        graph.add((dataset, DCTERMS.source, hub.iri("dataset", upstream_id)))


def _quality(
    graph: Graph, hub: HubIdentity, description: DatasetDescription, quality: QualitySummary
) -> None:
    dataset = dataset_iri(hub, description)
    annotation, body = hub.iri("quality", description.identifier), BNode()
    graph.add((annotation, RDF.type, DQV.QualityCertificate))
    graph.add((annotation, OA.hasTarget, dataset))
    graph.add((annotation, OA.motivatedBy, DQV.qualityAssessment))
    graph.add((annotation, OA.hasBody, body))
    graph.add((body, RDF.type, OA.TextualBody))
    graph.add((body, RDF.value, Literal(f"Great Expectations: {quality.sentence}", lang="en")))
    graph.add((dataset, DQV.hasQualityAnnotation, annotation))


def dataset_record(
    description: DatasetDescription,
    stats: DatasetStatistics,
    quality: QualitySummary | None,
    *,
    hub: HubIdentity,
    site_page: str,
    modified: date,
    site_root: str = "",
) -> Graph:
    """The HealthDCAT-AP record of one dataset; ``site_root`` resolves its dictionary page."""
    graph = Graph()
    dataset = dataset_iri(hub, description)
    lang = hub.language if description.layer is Layer.RAW else "en"
    # Open datasets are titled in French (their publisher's language) and described in English.
    title_lang = hub.language if description.layer in (Layer.RAW, Layer.OPEN_DATA) else lang
    add = graph.add
    add((dataset, RDF.type, DCAT.Dataset))
    add((dataset, DCTERMS.title, Literal(description.title, lang=title_lang)))
    add((dataset, DCTERMS.description, Literal(description.description or description.title, lang=lang)))
    add((dataset, DCTERMS.identifier, Literal(description.identifier)))
    add((dataset, DCTERMS.accessRights, ACCESS_RIGHTS[description.access]))
    add((dataset, DCATAP.applicableLegislation, EHDS_REGULATION))
    add((EHDS_REGULATION, RDF.type, ELI.LegalResource))
    add((dataset, DCAT.theme, HEALTH_THEME))
    add((dataset, HEALTHDCATAP.healthCategory, _health_category(description)))
    dataset_type = (
        STATISTICAL if description.layer is Layer.OPEN_DATA else hub.iri("dataset-type", "row-level")
    )
    add((dataset, DCTERMS.type, dataset_type))
    add((dataset, DCTERMS.modified, Literal(modified, datatype=XSD.date)))
    add((dataset, DCAT.landingPage, URIRef(site_page)))
    add((URIRef(site_page), RDF.type, FOAF.Document))
    if description.documentation is not None:
        documentation = URIRef(site_root + description.documentation)
        add((dataset, FOAF.page, documentation))
        add((documentation, RDF.type, FOAF.Document))
    for part in description.parts:
        add((dataset, DCTERMS.hasPart, hub.iri("dataset", part)))
    add((dataset, HEALTHDCATAP.hdab, _agent(graph, hub)))
    contact = hub.iri("contact", "dataset")
    add((contact, RDF.type, URIRef("http://www.w3.org/2006/vcard/ns#Kind")))
    add((contact, URIRef("http://www.w3.org/2006/vcard/ns#hasEmail"), URIRef(f"mailto:{hub.email}")))
    add((dataset, DCAT.contactPoint, contact))
    for keyword in description.keywords:
        add((dataset, DCAT.keyword, Literal(keyword)))
    if description.layer is Layer.OPEN_DATA:
        distributions = _open_distributions(graph, hub, description, site_page)
    else:
        distributions = [_distribution(graph, hub, description, site_page)]
    for distribution in distributions:
        add((dataset, DCAT.distribution, distribution))
    add((dataset, HEALTHDCATAP.hasStructuredData, Literal(True)))
    add((dataset, HEALTHDCATAP.hasVariables, _variables(graph, hub, description)))
    for key in description.coding_systems:
        concept = URIRef(CODING_SYSTEMS[key][0])
        add((dataset, HEALTHDCATAP.hasCodingSystem, concept))
        add((concept, RDF.type, DCTERMS.Standard))
        add((concept, RDF.type, SKOS.Concept))
    for category in sorted(_personal_data(description)):
        add((dataset, DPV.hasPersonalData, category))
        add((category, RDF.type, DPV.PersonalData))
    # A legal basis is for processing personal data; protected open aggregates hold none.
    if description.layer is not Layer.OPEN_DATA:
        legal_basis = hub.iri("legal-basis", "ehds-secondary-use")
        add((legal_basis, RDF.type, DPV.LegalBasis))
        add(
            (
                legal_basis,
                DCTERMS.description,
                Literal(
                    "Secondary use under the European Health Data Space regulation (EU) 2025/327, "
                    "on a data permit "
                    "issued by the health data access body; data pseudonymised before delivery.",
                    lang="en",
                ),
            )
        )
        add((legal_basis, DCTERMS.source, EHDS_REGULATION))
        add((dataset, DPV.hasLegalBasis, legal_basis))
    if stats.records is not None:
        add((dataset, HEALTHDCATAP.numberOfRecords, Literal(stats.records, datatype=XSD.nonNegativeInteger)))
    if stats.individuals is not None:
        add(
            (
                dataset,
                HEALTHDCATAP.numberOfUniqueIndividuals,
                Literal(stats.individuals, datatype=XSD.nonNegativeInteger),
            )
        )
    if stats.min_typical_age is not None:
        add(
            (
                dataset,
                HEALTHDCATAP.minTypicalAge,
                Literal(stats.min_typical_age, datatype=XSD.nonNegativeInteger),
            )
        )
    if stats.max_typical_age is not None:
        add(
            (
                dataset,
                HEALTHDCATAP.maxTypicalAge,
                Literal(stats.max_typical_age, datatype=XSD.nonNegativeInteger),
            )
        )
    _temporal(graph, hub, description, stats)
    _provenance(graph, hub, description, stats)
    if quality is not None:
        _quality(graph, hub, description, quality)
    return graph


def catalogue_graph(
    records: Iterable[tuple[DatasetDescription, Graph]], *, hub: HubIdentity, modified: date
) -> Graph:
    """The ``dcat:Catalog`` holding every record (the union of their graphs)."""
    graph = Graph()
    catalog = hub.iri("catalogue")
    graph.add((catalog, RDF.type, DCAT.Catalog))
    graph.add((catalog, DCTERMS.title, Literal("Health Data Hub metadata catalogue", lang="en")))
    graph.add(
        (
            catalog,
            DCTERMS.description,
            Literal(
                "HealthDCAT-AP records of the datasets the hub holds: raw SNDS and cohort tables, "
                "normalised marts, "
                "the OMOP CDM output and open-data exports.",
                lang="en",
            ),
        )
    )
    graph.add((catalog, DCATAP.applicableLegislation, EHDS_REGULATION))
    graph.add((catalog, DCTERMS.modified, Literal(modified, datatype=XSD.date)))
    graph.add((catalog, DCTERMS.publisher, _agent(graph, hub)))
    for description, record in records:
        graph.add((catalog, DCAT.dataset, dataset_iri(hub, description)))
        graph += record
    return graph


def bind_prefixes(graph: Graph) -> Graph:
    for prefix, namespace in {
        "dcat": DCAT,
        "dct": DCTERMS,
        "foaf": FOAF,
        "prov": PROV,
        "skos": SKOS,
        "dcatap": DCATAP,
        "healthdcatap": HEALTHDCATAP,
        "csvw": CSVW,
        "dpv": DPV,
        "dpv-pd": DPV_PD,
        "dqv": DQV,
        "oa": OA,
        "cv": CV,
        "eli": ELI,
        "adms": ADMS,
    }.items():
        graph.bind(prefix, namespace)
    return graph
