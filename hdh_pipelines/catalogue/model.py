"""What the catalogue knows about a dataset, independent of RDF or HTML.

A ``DatasetDescription`` is built from the registry (raw tables) or from the dbt
project's YAML (warehouse tables); ``DatasetStatistics`` and ``QualitySummary``
are measured. The records, the site and the dictionary are all rendered from
these, so they can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum

from hdh_pipelines.catalogue.shacl import AccessLevel


class Layer(Enum):
    RAW = "raw"
    MARTS = "marts"
    OMOP = "omop"
    OPEN_DATA = "open_data"


@dataclass(frozen=True)
class Variable:
    name: str
    type: str
    description: str
    nomenclature: str | None = None  # SNDS nomenclature table (IR_SEX_V…) or code list name
    coding_system: str | None = None  # key of CODING_SYSTEMS (ICD-10, ATC, CCAM, OMOP)


@dataclass(frozen=True)
class JoinLink:
    """``source_columns`` of dataset ``source`` join ``target_columns`` of ``target`` (identifiers)."""

    source: str
    target: str
    source_columns: tuple[str, ...]
    target_columns: tuple[str, ...]


@dataclass(frozen=True)
class OpenLicence:
    """The licence of an open dataset; ``identifier`` is its SPDX identifier (``etalab-2.0``)."""

    identifier: str
    title: str
    page: str


@dataclass(frozen=True)
class DistributionFile:
    """One downloadable file of an open dataset, relative to the dataset's folder."""

    file: str
    media_type: str  # IANA media type, e.g. text/csv


@dataclass(frozen=True)
class DatasetDescription:
    """``identifier`` is the Dagster asset key path (``raw/ir_ben_r``, ``marts/persons``)."""

    identifier: str
    name: str
    title: str
    description: str
    layer: Layer
    family: str
    variables: tuple[Variable, ...]
    primary_key: tuple[str, ...] = ()
    links: tuple[JoinLink, ...] = ()
    person_columns: tuple[str, ...] = ()
    event_date: str | None = None
    derived_from: tuple[str, ...] = ()
    access: AccessLevel = AccessLevel.NON_PUBLIC
    keywords: tuple[str, ...] = ()
    relation: str | None = None  # schema.table in the warehouse; None for a raw table (Parquet files)
    licence: OpenLicence | None = None  # open data only
    files: tuple[DistributionFile, ...] = ()  # open data only: one distribution each
    parts: tuple[str, ...] = ()  # an SNDS product: identifiers of the registered tables it groups
    documentation: str | None = None  # its page in the SNDS dictionary, relative to the site root

    @property
    def slug(self) -> str:
        return self.identifier.replace("/", "__")

    @property
    def coding_systems(self) -> tuple[str, ...]:
        return tuple(sorted({v.coding_system for v in self.variables if v.coding_system}))


@dataclass(frozen=True)
class Delivery:
    provider: str
    delivery_id: str
    loaded_at: datetime | None


@dataclass(frozen=True)
class DatasetStatistics:
    """Aggregates only; a count is None when it is under the threshold (suppressed) or unknown."""

    records: int | None
    individuals: int | None
    coverage_start: date | None
    coverage_end: date | None
    min_typical_age: int | None
    max_typical_age: int | None
    deliveries: tuple[Delivery, ...] = ()
    records_suppressed: bool = False
    individuals_suppressed: bool = False


EMPTY_STATISTICS = DatasetStatistics(None, None, None, None, None, None)


@dataclass(frozen=True)
class QualitySummary:
    """The latest Great Expectations result of a dataset, reduced to what may be published."""

    success: bool
    evaluated: int
    failed: int
    failed_expectations: tuple[str, ...] = field(default=())
    delivery: str | None = None

    @property
    def sentence(self) -> str:
        where = f" on delivery {self.delivery}" if self.delivery else ""
        if self.failed == 0:
            return f"All {self.evaluated} quality expectations passed{where}."
        verdict = "blocking failure" if not self.success else "non-blocking failure"
        return f"{self.failed} of {self.evaluated} quality expectations failed{where} ({verdict})."
