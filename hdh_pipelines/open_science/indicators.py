"""On-demand indicators: what is counted, in which population, broken down how; computed in DuckDB SQL
over the warehouse's marts and algorithms, protected by ``disclosure.protect_counts``.

A request counts **patients** (distinct persons per year) or **stays** (MCO
stays, error stays excluded) in a population: a targeting algorithm by name
(``alg_treated_diabetes``…), ATC prefixes (persons dispensed such a drug in the
year; not for stays) or ICD-10 prefixes (stays whose principal diagnosis
starts with one). The breakdown is an ordered subset of ``year``, ``sex``,
``age_band`` and one of ``region`` / ``departement``; the last one is the
published table's columns. Patients take sex, age (year − birth year) and
residence from ``marts.persons``; stays take them from the stay itself (age at
admission). The year of a stay is its PMSI year, as for the algorithms.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import duckdb
import pandas as pd

from hdh_pipelines.core.disclosure import DISCLOSURE_THRESHOLD
from hdh_pipelines.open_science.disclosure import (
    DOMINANCE_CONTRIBUTORS,
    DOMINANCE_SHARE,
    DOMINATED,
    PERSONS,
    TOTAL,
    Layout,
    ProtectedTable,
    PublishedTable,
    protect_counts,
)
from hdh_pipelines.open_science.errors import OpenDataRefused
from hdh_pipelines.open_science.geography import DEPARTEMENT_REGION, REGION_NAMES, UNKNOWN, departement_sql

ALGORITHMS = ("alg_treated_diabetes", "alg_acute_coronary_syndrome", "alg_treated_dyslipidaemia")
UNITS = ("patients", "stays")
DIMENSIONS = ("year", "sex", "age_band", "region", "departement")
GEOGRAPHIES = ("region", "departement")
# The fixed catalogue of breakdowns and age bands: a free breakdown or band could be differenced against
# another ([0, 80] then [0, 81] gives the persons aged exactly 80). The bandings are nested, so together
# they reveal nothing finer than the standard bands.
BREAKDOWNS = (
    ("year",),
    ("year", "sex"),
    ("year", "age_band"),
    ("year", "region"),
    ("year", "departement"),
    ("year", "sex", "age_band"),
    ("year", "sex", "region"),
    ("year", "age_band", "region"),
    ("year", "sex", "departement"),
    ("year", "sex", "age_band", "region"),
)
AGE_BANDINGS = {"standard": (0, 18, 40, 65, 80), "broad": (0, 18, 65)}
DEFAULT_AGE_BANDS = AGE_BANDINGS["standard"]
SEX_LABELS = {"1": "male", "2": "female"}
# Used with fullmatch: "$" would also match before a final newline ("abc\n").
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_ATC = re.compile(r"[A-Z]([0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?)?")
_ICD10 = re.compile(r"[A-Z][0-9]{0,2}[0-9A-Z]{0,2}")


@dataclass(frozen=True)
class IndicatorSpec:
    """One indicator request, validated by ``validate``."""

    name: str
    unit: str
    breakdown: tuple[str, ...]
    year_from: int
    year_to: int
    algorithm: str | None = None
    atc_prefixes: tuple[str, ...] = ()
    icd10_prefixes: tuple[str, ...] = ()
    age_bands: tuple[int, ...] = DEFAULT_AGE_BANDS
    threshold: int = DISCLOSURE_THRESHOLD
    description: str = ""

    def validate(self) -> IndicatorSpec:
        if not _NAME.fullmatch(self.name):
            _refuse("invalid_name", "The name must be 1–63 lower-case letters, digits, '-' or '_'.", "name")
        if self.unit not in UNITS:
            _refuse("invalid_unit", f"What is counted must be one of {', '.join(UNITS)}.", "unit")
        populations = [bool(self.algorithm), bool(self.atc_prefixes), bool(self.icd10_prefixes)]
        if sum(populations) != 1:
            _refuse(
                "invalid_population",
                "Give exactly one population: an algorithm, ATC prefixes or ICD-10 prefixes.",
                "algorithm",
            )
        if self.algorithm and self.algorithm not in ALGORITHMS:
            _refuse(
                "unknown_algorithm", f"Unknown algorithm; available: {', '.join(ALGORITHMS)}.", "algorithm"
            )
        if any(not _ATC.fullmatch(code) for code in self.atc_prefixes):
            _refuse(
                "invalid_code",
                "ATC prefixes are upper-case ATC codes or their beginnings (A10, C10AA).",
                "atc_prefixes",
            )
        if any(not _ICD10.fullmatch(code) for code in self.icd10_prefixes):
            _refuse(
                "invalid_code",
                "ICD-10 prefixes are upper-case codes without the dot (I21, E11).",
                "icd10_prefixes",
            )
        if self.unit == "stays" and self.atc_prefixes:
            _refuse(
                "unsupported_combination",
                "Stays cannot be selected by a drug code list: count patients, "
                "or use an algorithm or ICD-10 prefixes.",
                "unit",
            )
        self._validate_breakdown()
        if not 1900 <= self.year_from <= self.year_to <= 2100 or self.year_to - self.year_from > 30:
            _refuse(
                "invalid_years", "year_from ≤ year_to, within 1900–2100 and at most 31 years.", "year_from"
            )
        if tuple(self.age_bands) not in AGE_BANDINGS.values():
            _refuse(
                "invalid_age_bands",
                "Age bands come from the catalogue: "
                + "; ".join(f"{name} {list(bounds)}" for name, bounds in AGE_BANDINGS.items())
                + ".",
                "age_bands",
            )
        if self.threshold < DISCLOSURE_THRESHOLD:
            _refuse(
                "invalid_threshold",
                f"The threshold can be raised, never set below {DISCLOSURE_THRESHOLD}.",
                "threshold",
            )
        return self

    def _validate_breakdown(self) -> None:
        unknown = [name for name in self.breakdown if name not in DIMENSIONS]
        if not self.breakdown or unknown or len(set(self.breakdown)) != len(self.breakdown):
            _refuse(
                "invalid_breakdown",
                f"The breakdown is a list of distinct names among {', '.join(DIMENSIONS)}.",
                "breakdown",
            )
        if sum(name in GEOGRAPHIES for name in self.breakdown) > 1:
            _refuse("invalid_breakdown", "Break down by région or by département, not both.", "breakdown")
        if tuple(self.breakdown) not in BREAKDOWNS:
            _refuse(
                "invalid_breakdown",
                "The breakdown comes from the catalogue: "
                + "; ".join(", ".join(breakdown) for breakdown in BREAKDOWNS)
                + ".",
                "breakdown",
            )

    def definition(self) -> dict:
        """The request as published in the metadata and the log."""
        return asdict(self)

    def population(self) -> str:
        """What is counted in whom, whatever the breakdown: tables of one population share their persons."""
        return json.dumps(
            [self.unit, self.algorithm, sorted(self.atc_prefixes), sorted(self.icd10_prefixes)],
            separators=(",", ":"),
        )


def spec_from_definition(definition: dict) -> IndicatorSpec:
    """The spec of a logged definition (lists back to tuples)."""
    return IndicatorSpec(
        **{key: tuple(value) if isinstance(value, list) else value for key, value in definition.items()}
    )


def _refuse(reason: str, message: str, field_name: str) -> None:
    raise OpenDataRefused(reason, message, field=field_name)


def age_band_labels(bounds: Sequence[int]) -> list[str]:
    uppers = [*bounds[1:], None]
    return [
        f"{low}+" if high is None else f"{low}-{high - 1}" for low, high in zip(bounds, uppers, strict=True)
    ]


def _age_band_sql(age: str, bounds: Sequence[int]) -> str:
    labels = age_band_labels(bounds)
    branches = " ".join(
        f"when {age} >= {low} then '{label}'"
        for low, label in reversed(list(zip(bounds, labels, strict=True)))
    )
    return f"(case when {age} is null or {age} < 0 then '{UNKNOWN}' {branches} end)"


def _events_sql(spec: IndicatorSpec) -> str:
    """One row per counted subject and year with its person, sex, age and département (SQL over the
    warehouse); the person is who the subject is about, for the person-based rules."""
    persons = "join marts.persons p using (ben_idt_ano)"
    person_attributes = (
        "ben_idt_ano as person, p.sex_code as sex_code, year - p.birth_year as age, "
        "p.residence_departement as dpt"
    )
    if spec.unit == "patients" and spec.algorithm:
        source = f"select distinct ben_idt_ano, year from algorithms.{spec.algorithm}"
    elif spec.unit == "patients" and spec.atc_prefixes:
        source = (
            "select distinct ben_idt_ano, year(dispensing_date) as year from marts.drug_dispensations "
            f"where ben_idt_ano is not null and not is_for_information_only and boxes > 0 "
            f"and {_prefix_sql('atc_code', spec.atc_prefixes)}"
        )
    elif spec.unit == "patients":
        source = (
            "select distinct ben_idt_ano, pmsi_year as year from marts.hospital_stays "
            f"where ben_idt_ano is not null and not is_error_stay "
            f"and {_prefix_sql('principal_diagnosis', spec.icd10_prefixes)}"
        )
    else:
        stays = "select * from marts.hospital_stays s where not s.is_error_stay"
        if spec.algorithm:
            stays += (
                f" and exists (select 1 from algorithms.{spec.algorithm} a "
                "where a.ben_idt_ano = s.ben_idt_ano and a.year = s.pmsi_year)"
            )
        else:
            stays += f" and {_prefix_sql('s.principal_diagnosis', spec.icd10_prefixes)}"
        return (
            "select ben_idt_ano as person, pmsi_year as year, sex_code, "
            "case when age_years is null and age_days is not null then 0 else age_years end as age, "
            f"residence_departement as dpt from ({stays})"
        )
    return f"select year, {person_attributes} from ({source}) {persons}"


def _prefix_sql(column: str, prefixes: Sequence[str]) -> str:
    # Prefixes are validated against a strict pattern above, so they are safe as SQL literals.
    return "(" + " or ".join(f"starts_with({column}, '{code}')" for code in prefixes) + ")"


def margin_grouping_sets(dimensions: Sequence[str], extra: Sequence[str] = ()) -> str:
    """The GROUPING SETS of a protected table's cells and margins: every dimension, the row dimensions
    (row totals), the column dimension (column totals) and none (grand total), each with ``extra``."""
    dimensions = list(dimensions)
    sets = [dimensions, dimensions[:-1], dimensions[-1:], []] if len(dimensions) > 1 else [dimensions, []]
    return ", ".join("(" + ", ".join([*names, *extra]) + ")" for names in sets)


def dominance_sql(contribution: str) -> str:
    """The (n, k) dominance rule over per-person contributions, as an aggregate SQL condition."""
    return (
        f"(list_sum(max({contribution}, {DOMINANCE_CONTRIBUTORS})) > {DOMINANCE_SHARE} * sum({contribution}))"
    )


def compute_indicator(connection: duckdb.DuckDBPyConnection, spec: IndicatorSpec) -> pd.DataFrame:
    """The full grid of counts with its margins (zero values explicit) for ``spec`` on a warehouse
    connection: each value with its distinct persons and, for stays, the dominance rule."""
    spec.validate()
    geography = pd.DataFrame(
        {"departement": list(DEPARTEMENT_REGION), "region": list(DEPARTEMENT_REGION.values())}
    )
    names = ", ".join(spec.breakdown)
    labels = ", ".join(f"coalesce({name}, '{TOTAL}') as {name}" for name in spec.breakdown)
    # Persons are counted once per year in 'patients': a person's contribution to a value is the number
    # of its years (patients) or of its stays in it. Stays are also held to the dominance rule.
    dominated = dominance_sql("contribution") if spec.unit == "stays" else "false"
    connection.register("hdh_geography", geography)
    try:
        relation = connection.sql(
            f"""
            with events as ({_events_sql(spec)}),
            labelled as (
                select
                    person,
                    cast(year as varchar) as year,
                    coalesce(map_extract({_sex_map()}, cast(sex_code as varchar))[1], '{UNKNOWN}') as sex,
                    {_age_band_sql("age", spec.age_bands)} as age_band,
                    coalesce(g.departement, '{UNKNOWN}') as departement,
                    coalesce(g.region, '{UNKNOWN}') as region
                from events
                left join hdh_geography g on g.departement = {departement_sql("events.dpt")}
                where year between {spec.year_from} and {spec.year_to}
            ),
            contributions as (
                select {names}, person, count(*) as contribution from labelled
                group by grouping sets ({margin_grouping_sets(spec.breakdown, ["person"])})
            )
            select {labels}, sum(contribution)::bigint as count, count(person) as persons,
                   {dominated} as dominated
            from contributions group by {names}
            """
        )
        observed = relation.df()
    except duckdb.CatalogException as error:
        raise OpenDataRefused(
            "missing_input",
            f"The warehouse lacks a table the indicator needs ({str(error).splitlines()[0]}): "
            "materialise the marts and algorithms first.",
        ) from None
    finally:
        connection.unregister("hdh_geography")
    return _full_grid(observed, spec)


def _sex_map() -> str:
    return "map {" + ", ".join(f"'{code}': '{label}'" for code, label in SEX_LABELS.items()) + "}"


def _domain(name: str, spec: IndicatorSpec, observed: pd.DataFrame) -> list[str]:
    expected = {
        "year": [str(year) for year in range(spec.year_from, spec.year_to + 1)],
        "sex": list(SEX_LABELS.values()),
        "age_band": age_band_labels(spec.age_bands),
        "region": list(REGION_NAMES),
        "departement": list(DEPARTEMENT_REGION),
    }[name]
    # 'unknown' is a category only when some subject has it, so every subject is in the table.
    extra = sorted(set(observed[name]) - set(expected) - {TOTAL}) if name in observed else []
    return expected + extra


def full_grid(observed: pd.DataFrame, domains: dict[str, list[str]], measures: Sequence[str]) -> pd.DataFrame:
    """Every cell and margin of a table (``Total`` in summed dimensions), absent ones as zeros."""
    names = list(domains)
    row_domains = [domains[name] for name in names[:-1]]
    column_domain = domains[names[-1]]
    keys = [
        (*row, column)
        for row in [*itertools.product(*row_domains), (TOTAL,) * len(row_domains)]
        for column in [*column_domain, TOTAL]
    ]
    if len(names) == 1:
        keys = [(value,) for value in [*column_domain, TOTAL]]
    grid = pd.MultiIndex.from_tuples(list(dict.fromkeys(keys)), names=names)
    values = observed.set_index(names)[[*measures, PERSONS, DOMINATED]]
    if len(names) == 1:
        grid = grid.get_level_values(0)  # a one-level MultiIndex does not match a plain index
    complete = values.reindex(grid)
    complete[DOMINATED] = complete[DOMINATED].astype("boolean").fillna(False).astype(bool)
    for name in [*measures, PERSONS]:
        complete[name] = complete[name].fillna(0).astype("int64")
    return complete.reset_index()


def _full_grid(observed: pd.DataFrame, spec: IndicatorSpec) -> pd.DataFrame:
    return full_grid(observed, {name: _domain(name, spec, observed) for name in spec.breakdown}, ["count"])


def layout(spec: IndicatorSpec, finest: dict[str, tuple[str, ...]]) -> Layout:
    """How ``spec``'s labels aggregate the finest cells ``finest`` shared by its population's tables
    (``finest_dimensions`` below); its scope is its years and every finest value of the other dimensions."""
    scope = {**finest, "year": tuple(str(year) for year in range(spec.year_from, spec.year_to + 1))}
    coarsening: dict[str, tuple[str, dict[str, str]]] = {}
    for name in spec.breakdown:
        if name in ("year", "sex", "departement"):
            coarsening[name] = (_FINEST[name], {value: value for value in finest[_FINEST[name]]})
        elif name == "age_band":
            coarsening[name] = ("age", _coarser_ages(finest["age"], spec.age_bands))
        elif set(finest["geo"]) - {UNKNOWN} == set(DEPARTEMENT_REGION):  # régions of départements
            coarsening[name] = (
                "geo",
                {value: DEPARTEMENT_REGION.get(value, value) for value in finest["geo"]},
            )
        else:
            coarsening[name] = ("geo", {value: value for value in finest["geo"]})
    return Layout(scope, coarsening)


# The finest dimension each breakdown dimension coarsens.
_FINEST = {"year": "year", "sex": "sex", "age_band": "age", "region": "geo", "departement": "geo"}


def finest_dimensions(specs: Sequence[IndicatorSpec]) -> dict[str, tuple[str, ...]]:
    """The finest cells shared by tables of one population: only the dimensions some table breaks down
    by (finer cells would make the audit larger, not stricter), départements when one table uses them."""
    used = {_FINEST[name] for spec in specs for name in spec.breakdown}
    years = sorted({year for spec in specs for year in range(spec.year_from, spec.year_to + 1)})
    finest: dict[str, tuple[str, ...]] = {"year": tuple(str(year) for year in years)}
    if "sex" in used:
        finest["sex"] = (*SEX_LABELS.values(), UNKNOWN)
    if "age" in used:
        bounds = sorted({bound for spec in specs for bound in spec.age_bands})
        finest["age"] = (*age_band_labels(bounds), UNKNOWN)
    if "geo" in used:
        departements = any("departement" in spec.breakdown for spec in specs)
        finest["geo"] = (*(DEPARTEMENT_REGION if departements else REGION_NAMES), UNKNOWN)
    return finest


def _coarser_ages(finest: Sequence[str], bounds: Sequence[int]) -> dict[str, str]:
    labels = age_band_labels(bounds)
    mapping = {UNKNOWN: UNKNOWN}
    for label in finest:
        if label != UNKNOWN:
            low = int(label.split("-")[0].rstrip("+"))
            mapping[label] = labels[max(i for i, bound in enumerate(bounds) if bound <= low)]
    return mapping


def protect_indicator(
    cells: pd.DataFrame, spec: IndicatorSpec, history: Sequence[tuple[IndicatorSpec, pd.DataFrame]] = ()
) -> ProtectedTable:
    """Protect an indicator's table consistently with the tables already published for its population
    (``history``: their specs and published tables, hidden values as NA)."""
    finest = finest_dimensions([spec, *(previous for previous, _ in history)])
    linked = [
        PublishedTable(table, previous.breakdown, "count", layout(previous, finest))
        for previous, table in history
    ]
    return protect_counts(
        cells,
        spec.breakdown,
        "count",
        threshold=spec.threshold,
        layout=layout(spec, finest),
        published=linked,
    )
