"""Build the whole catalogue into a folder: records (Turtle, JSON-LD), SHACL results, site, dictionary, map.

The folder is written under a temporary name beside the target and swapped in
by rename, so readers see the previous catalogue or the new one, never a half
written one; a catalogue with a SHACL violation is not published at all.
Everything in it is public metadata: aggregates after suppression, no
row-level value, no secret.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

from rdflib import Graph

from hdh_pipelines.catalogue.cartography import cartography_page
from hdh_pipelines.catalogue.dictionary import (
    DICTIONARY_DIR,
    HubTable,
    join_links,
    product_descriptions,
    table_page,
    write_dictionary,
)
from hdh_pipelines.catalogue.model import (
    EMPTY_STATISTICS,
    DatasetDescription,
    DatasetStatistics,
    Layer,
    QualitySummary,
)
from hdh_pipelines.catalogue.opendata import open_data_descriptions, open_data_statistics
from hdh_pipelines.catalogue.records import HubIdentity, bind_prefixes, catalogue_graph, dataset_record
from hdh_pipelines.catalogue.shacl import AccessLevel, ShaclResult, validate
from hdh_pipelines.catalogue.site import SiteEntry, write_site
from hdh_pipelines.catalogue.snds_reference import SndsReference, read_snds_reference
from hdh_pipelines.catalogue.sources import raw_descriptions, warehouse_descriptions
from hdh_pipelines.catalogue.statistics import (
    delivered_years,
    raw_statistics,
    raw_table_files,
    warehouse_statistics,
)
from hdh_pipelines.ingestion.storage import QUALITY_SUMMARY
from hdh_pipelines.normalisation.manifest import read_manifest
from hdh_pipelines.normalisation.warehouse import Warehouse
from hdh_pipelines.registry import DatasetRegistry, default_registry
from hdh_pipelines.rights.directory import read_directory


class CatalogueInvalid(RuntimeError):
    """The records do not pass SHACL; ``reason`` is machine-readable, the message says which and why."""

    reason = "shacl_violations"


@dataclass(frozen=True)
class CatalogueInputs:
    raw_root: Path | None
    # The warehouse dbt built, on either engine; None for a catalogue of the raw tables only.
    warehouse: Warehouse | None
    # The dbt manifest describing the marts and OMOP tables; the repository project's when None.
    dbt_manifest: Path | None = None
    registry: DatasetRegistry = field(default_factory=default_registry)
    hub: HubIdentity = field(default_factory=HubIdentity)
    site_url: str = "https://catalogue.health-data-hub.example/site/"
    validator_dir: Path | None = None
    # Public open-data folder (<open data dir>/<dataset>/metadata.json); None: no open dataset catalogued.
    open_data_dir: Path | None = None
    # SNDS references (schema-snds, dico-snds, nomenclatures); None: $HDH_SNDS_REFERENCE or beside the repo.
    snds_reference: Path | None = None


@dataclass(frozen=True)
class CatalogueBuild:
    folder: Path
    records: int
    results: Mapping[AccessLevel, ShaclResult]
    entries: tuple[SiteEntry, ...]

    @property
    def violations(self) -> int:
        return sum(len(r.violations) for r in self.results.values())

    @property
    def warnings(self) -> int:
        return sum(len(r.warnings) for r in self.results.values())


def quality_summary(report: Mapping, delivery: str) -> QualitySummary:
    """The publishable part of a stored ValidationReport: verdict and counts, never the sample values."""
    evaluated = [o for o in report.get("outcomes", []) if o.get("evaluated")]
    failed = [o["name"] for o in evaluated if o.get("success") is False]
    return QualitySummary(bool(report.get("success")), len(evaluated), len(failed), tuple(failed), delivery)


def _latest_quality(
    raw_root: Path, registry: DatasetRegistry, description: DatasetDescription, stats: DatasetStatistics
) -> QualitySummary | None:
    # Deliveries are ordered by load time; the latest one with a report for this dataset wins.
    # Each delivery stores its reports as raw/<provider>/<delivery>/_quality.json (dataset -> report).
    for delivery in reversed(stats.deliveries):
        path = raw_root / delivery.provider / delivery.delivery_id / QUALITY_SUMMARY
        if not path.exists():
            continue
        for dataset, report in json.loads(path.read_text(encoding="utf-8")).items():
            schema = registry.resolve(dataset)
            if schema is not None and schema.name == description.name:
                return quality_summary(report, f"{delivery.provider}/{delivery.delivery_id}")
    return None


def _measure(inputs: CatalogueInputs, reference: date, files: Mapping[str, list[Path]]) -> list[SiteEntry]:
    entries = []
    for description in raw_descriptions(inputs.registry):
        stats, quality = EMPTY_STATISTICS, None
        if description.name in files:
            stats = raw_statistics(description, files[description.name], inputs.registry, reference=reference)
            quality = _latest_quality(inputs.raw_root, inputs.registry, description, stats)
        entries.append(SiteEntry(description, stats, quality))
    for description in warehouse_descriptions(read_manifest(inputs.dbt_manifest)):
        stats = None
        if inputs.warehouse is not None and inputs.warehouse.exists():
            stats = warehouse_statistics(description, inputs.warehouse, reference=reference)
        entries.append(SiteEntry(description, stats or EMPTY_STATISTICS, None))
    if inputs.open_data_dir is not None and inputs.open_data_dir.is_dir():
        for description in open_data_descriptions(inputs.open_data_dir):
            entries.append(
                SiteEntry(description, open_data_statistics(inputs.open_data_dir, description), None)
            )
    return entries


def _snds_entries(
    entries: Sequence[SiteEntry], snds: SndsReference
) -> tuple[list[SiteEntry], list[SiteEntry], dict[str, DatasetDescription]]:
    """The entries with their dictionary pages, one entry per SNDS product, and the SNDS tables registered."""
    registered = {
        e.description.name: e.description
        for e in entries
        if e.description.layer is Layer.RAW and e.description.name in snds.tables
    }
    documented = [
        replace(e, description=replace(e.description, documentation=table_page(e.description.name)))
        if e.description.name in registered
        else e
        for e in entries
    ]
    products = product_descriptions(snds, {name: d.identifier for name, d in registered.items()})
    return documented, [SiteEntry(p, EMPTY_STATISTICS, None) for p in products], registered


def _hub_tables(
    entries: Sequence[SiteEntry],
    registered: Mapping[str, DatasetDescription],
    files: Mapping[str, list[Path]],
) -> dict[str, HubTable]:
    by_identifier = {e.description.identifier: e for e in entries}
    hub = {}
    for name, description in registered.items():
        stats = by_identifier[description.identifier].statistics
        held = name in files
        hub[name] = HubTable(
            dataset_page=f"datasets/{description.slug}.html",
            years=delivered_years(name, files.get(name, []), stats.deliveries) if held else (),
            statistics=stats if held else None,
        )
    return hub


def _write_graph(graph: Graph, stem: Path) -> None:
    bind_prefixes(graph)
    stem.with_suffix(".ttl").write_text(graph.serialize(format="turtle"), encoding="utf-8")
    context = {prefix: str(namespace) for prefix, namespace in graph.namespaces() if prefix}
    stem.with_suffix(".jsonld").write_text(
        graph.serialize(format="json-ld", context=context, auto_compact=True), encoding="utf-8"
    )


def _validation_sentence(results: Mapping[AccessLevel, ShaclResult]) -> str:
    parts = [
        f"{level.value}: {len(r.violations)} violation(s), {len(r.warnings)} warning(s)"
        for level, r in results.items()
    ]
    return "HealthDCAT-AP SHACL validation — " + "; ".join(parts) + "."


def _publish(staging: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def build_catalogue(inputs: CatalogueInputs, output: Path, *, today: date) -> CatalogueBuild:
    """Measure, describe, validate and publish the catalogue into ``output``.

    Raises CatalogueInvalid (nothing published) when a record has a SHACL violation.
    """
    snds = read_snds_reference(inputs.snds_reference)
    files = raw_table_files(inputs.raw_root, inputs.registry) if inputs.raw_root else {}
    datasets, products, registered = _snds_entries(_measure(inputs, today, files), snds)
    entries = datasets + products
    records = []
    for entry in entries:
        page = f"{inputs.site_url}datasets/{entry.description.slug}.html"
        records.append(
            (
                entry,
                dataset_record(
                    entry.description,
                    entry.statistics,
                    entry.quality,
                    hub=inputs.hub,
                    site_page=page,
                    modified=today,
                    site_root=inputs.site_url,
                ),
            )
        )
    results = {}
    for level in AccessLevel:
        chosen = [(e.description, g) for e, g in records if e.description.access is level]
        if chosen:
            results[level] = validate(
                catalogue_graph(chosen, hub=inputs.hub, modified=today), level, inputs.validator_dir
            )
    violations = [f for r in results.values() for f in r.violations]
    if violations:
        shown = "; ".join(f"{f.focus} {f.path}: {f.message}" for f in violations[:5])
        raise CatalogueInvalid(f"{len(violations)} SHACL violation(s); nothing was published. First: {shown}")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.{uuid.uuid4().hex}.tmp")
    try:
        (staging / "records").mkdir(parents=True)
        for entry, graph in records:
            _write_graph(graph, staging / "records" / entry.description.slug)
        _write_graph(
            catalogue_graph([(e.description, g) for e, g in records], hub=inputs.hub, modified=today),
            staging / "catalogue",
        )
        (staging / "validation.json").write_text(
            json.dumps(
                {
                    level.value: {
                        "violations": len(r.violations),
                        "warnings": len(r.warnings),
                        "findings": [f.__dict__ for f in r.findings],
                    }
                    for level, r in results.items()
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        directory = read_directory(inputs.open_data_dir) if inputs.open_data_dir is not None else None
        write_site(staging, [e for e, _g in records], _validation_sentence(results), directory)
        index_rows = [
            (d.identifier, d.title, d.description, f"../datasets/{d.slug}.html")
            for d in (e.description for e in entries)
        ]
        referentials = {
            e.description.name: f"datasets/{e.description.slug}.html"
            for e in datasets
            if e.description.layer is Layer.RAW and e.description.name in snds.nomenclatures
        }
        write_dictionary(
            staging / DICTIONARY_DIR, snds, _hub_tables(entries, registered, files), index_rows, referentials
        )
        (staging / "cartography.html").write_text(
            cartography_page(snds, join_links(snds), set(registered), [e.description for e in datasets]),
            encoding="utf-8",
        )
        _publish(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CatalogueBuild(output, len(records), results, tuple(e for e, _g in records))


__all__: Sequence[str] = ("CatalogueBuild", "CatalogueInputs", "CatalogueInvalid", "build_catalogue")
