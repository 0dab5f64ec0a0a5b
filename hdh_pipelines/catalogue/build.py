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

from hdh_pipelines.catalogue.model import (
    EMPTY_STATISTICS,
    DatasetDescription,
    DatasetStatistics,
    QualitySummary,
)
from hdh_pipelines.catalogue.opendata import open_data_descriptions, open_data_statistics
from hdh_pipelines.catalogue.records import HubIdentity, bind_prefixes, catalogue_graph, dataset_record
from hdh_pipelines.catalogue.shacl import AccessLevel, ShaclResult, validate
from hdh_pipelines.catalogue.site import SiteEntry, write_site
from hdh_pipelines.catalogue.sources import raw_descriptions, warehouse_descriptions
from hdh_pipelines.catalogue.statistics import (
    raw_statistics,
    raw_table_files,
    warehouse_column_types,
    warehouse_statistics,
)
from hdh_pipelines.core.paths import DBT_PROJECT_DIR
from hdh_pipelines.ingestion.storage import QUALITY_SUMMARY
from hdh_pipelines.registry import DatasetRegistry, default_registry
from hdh_pipelines.rights.directory import read_directory


class CatalogueInvalid(RuntimeError):
    """The records do not pass SHACL; ``reason`` is machine-readable, the message says which and why."""

    reason = "shacl_violations"


@dataclass(frozen=True)
class CatalogueInputs:
    raw_root: Path | None
    warehouse: Path | None
    dbt_project_dir: Path = DBT_PROJECT_DIR
    registry: DatasetRegistry = field(default_factory=default_registry)
    hub: HubIdentity = field(default_factory=HubIdentity)
    site_url: str = "https://catalogue.health-data-hub.example/site/"
    validator_dir: Path | None = None
    # Public open-data folder (<open data dir>/<dataset>/metadata.json); None: no open dataset catalogued.
    open_data_dir: Path | None = None


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


def _measure(inputs: CatalogueInputs, reference: date) -> list[SiteEntry]:
    entries = []
    files = raw_table_files(inputs.raw_root, inputs.registry) if inputs.raw_root else {}
    for description in raw_descriptions(inputs.registry):
        stats, quality = EMPTY_STATISTICS, None
        if description.name in files:
            stats = raw_statistics(description, files[description.name], inputs.registry, reference=reference)
            quality = _latest_quality(inputs.raw_root, inputs.registry, description, stats)
        entries.append(SiteEntry(description, stats, quality))
    for description in warehouse_descriptions(inputs.dbt_project_dir):
        stats = None
        if inputs.warehouse is not None and inputs.warehouse.exists():
            stats = warehouse_statistics(description, inputs.warehouse, reference=reference)
            types = warehouse_column_types(inputs.warehouse, description.relation)
            description = _with_types(description, types)
        entries.append(SiteEntry(description, stats or EMPTY_STATISTICS, None))
    if inputs.open_data_dir is not None and inputs.open_data_dir.is_dir():
        for description in open_data_descriptions(inputs.open_data_dir):
            entries.append(
                SiteEntry(description, open_data_statistics(inputs.open_data_dir, description), None)
            )
    return entries


def _with_types(description: DatasetDescription, types: Mapping[str, str]) -> DatasetDescription:
    variables = tuple(replace(v, type=types.get(v.name, v.type).lower()) for v in description.variables)
    return replace(description, variables=variables)


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
    entries = _measure(inputs, today)
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
        _publish(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CatalogueBuild(output, len(records), results, tuple(e for e, _g in records))


__all__: Sequence[str] = ("CatalogueBuild", "CatalogueInputs", "CatalogueInvalid", "build_catalogue")
