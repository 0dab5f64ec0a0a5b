"""Open-science services in Dagster: the on-demand indicator job, the open dataset, the data-challenge export
and the synthetic SNDS.

The logic is ``hdh_pipelines.open_science``; this module maps run config and
resources to its functions, results to metadata and refusals to failures.
Every step opens the warehouse read-only, which blocks dbt's writer: they all
belong to the ``duckdb_warehouse`` pool.
"""

import shutil
import tempfile
from datetime import datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from hdh_pipelines.core.constants import REQUESTER_TAG, WAREHOUSE_POOL
from hdh_pipelines.core.disclosure import DISCLOSURE_THRESHOLD
from hdh_pipelines.normalisation.manifest import read_manifest
from hdh_pipelines.normalisation.resources import WarehouseResource
from hdh_pipelines.open_science import (
    IndicatorSpec,
    OpenDataRefused,
    export_challenge,
    load_challenge_key,
    markdown_table,
    publish_open_dispensations,
    run_indicator,
)
from hdh_pipelines.open_science.indicators import AGE_BANDINGS, DEFAULT_AGE_BANDS
from hdh_pipelines.open_science.resources import OpenScienceResource
from hdh_pipelines.open_science.synthetic import generate_snds

OPEN_SCIENCE_GROUP = "open_science"
OPEN_SCIENCE_OWNERS = ["team:open-science"]


def _refused(refusal: OpenDataRefused, what: str) -> dg.Failure:
    return dg.Failure(
        description=f"{what} refused ({refusal.reason}): {refusal.message}",
        metadata=refusal.as_dict(),
        allow_retries=False,
    )


class IndicatorRequest(dg.Config):
    """An indicator, as typed in the launchpad (docs/open_science.md has an example)."""

    name: str = Field(description="Output name: lower-case letters, digits, '-', '_'.")
    unit: str = Field(default="patients", description="What is counted: patients or stays.")
    algorithm: str | None = Field(default=None, description="Population: a targeting algorithm's name.")
    atc_prefixes: list[str] = Field(default=[], description="Population: ATC prefixes (patients only).")
    icd10_prefixes: list[str] = Field(default=[], description="Population: ICD-10 prefixes of the DP.")
    breakdown: list[str] = Field(
        default=["year", "sex", "age_band", "region"],
        description="One of the catalogue's breakdowns (docs/open_science.md); the last gives the columns.",
    )
    year_from: int = Field(description="First year counted.")
    year_to: int = Field(description="Last year counted.")
    age_bands: list[int] = Field(
        default=list(DEFAULT_AGE_BANDS),
        description="Lower bounds of the age bands, from the catalogue: "
        + "; ".join(f"{name} {list(bounds)}" for name, bounds in AGE_BANDINGS.items()),
    )
    threshold: int = Field(
        default=DISCLOSURE_THRESHOLD,
        description=f"Smallest count of distinct persons shown (at least {DISCLOSURE_THRESHOLD}).",
    )
    description: str = Field(default="", description="What the indicator is for (published in its metadata).")

    def spec(self) -> IndicatorSpec:
        return IndicatorSpec(
            name=self.name,
            unit=self.unit,
            breakdown=tuple(self.breakdown),
            year_from=self.year_from,
            year_to=self.year_to,
            algorithm=self.algorithm,
            atc_prefixes=tuple(self.atc_prefixes),
            icd10_prefixes=tuple(self.icd10_prefixes),
            age_bands=tuple(self.age_bands),
            threshold=self.threshold,
            description=self.description,
        )


@dg.op(pool=WAREHOUSE_POOL, tags={"hdh/layer": "open_science"})
def compute_indicator(
    context: dg.OpExecutionContext,
    config: IndicatorRequest,
    warehouse: WarehouseResource,
    open_science: OpenScienceResource,
) -> dg.Output:
    """Compute, protect, publish and log one indicator."""
    spec = config.spec()
    try:
        with warehouse.exclusive(), warehouse.read_only() as connection:
            result = run_indicator(
                connection,
                warehouse.warehouse(),
                spec,
                Path(open_science.indicator_root),
                Path(open_science.request_log),
                request_id=context.run_id,
                requester=context.run.tags.get(REQUESTER_TAG, "unspecified"),
                now=datetime.now().astimezone(),
            )
    except OpenDataRefused as refusal:
        raise _refused(refusal, f"Indicator {spec.name}") from None
    suppression = result.metadata["suppression"]
    return dg.Output(
        str(result.folder),
        metadata={
            "indicator": spec.name,
            "output": dg.MetadataValue.path(str(result.folder)),
            "suppressed_values": suppression["suppressed_values"],
            "published_values": suppression["published_values"],
            "table": dg.MetadataValue.md(markdown_table(result.protected.table)),
        },
    )


@dg.job(
    tags={"hdh/layer": "open_science"},
    description="An on-demand indicator with disclosure control: fill the run config in the launchpad.",
)
def indicator_job():
    compute_indicator()


class OpenDataConfig(dg.Config):
    atc_level: int = Field(default=2, description="ATC level of the classes (1 to 5; 2 = A10, 3 = A10B).")
    threshold: int = Field(
        default=DISCLOSURE_THRESHOLD,
        description=f"Smallest patient count shown (at least {DISCLOSURE_THRESHOLD}).",
    )


@dg.asset(
    key=["open_science", "open_dispensations"],
    deps=[dg.AssetKey(["marts", "drug_dispensations"]), dg.AssetKey(["marts", "persons"])],
    group_name=OPEN_SCIENCE_GROUP,
    owners=OPEN_SCIENCE_OWNERS,
    kinds={"duckdb", "csv", "parquet"},
    pool=WAREHOUSE_POOL,
    tags={"hdh/layer": "open_science"},
    description="Open data: patients, dispensations and boxes by ATC class × year × région, small counts "
    "suppressed with their complements; CSV + Parquet + metadata.json (Licence Ouverte 2.0), public folder.",
)
def open_dispensations(
    config: OpenDataConfig, warehouse: WarehouseResource, open_science: OpenScienceResource
) -> dg.MaterializeResult:
    try:
        with warehouse.exclusive(), warehouse.read_only() as connection:
            protected, folder, metadata = publish_open_dispensations(
                connection,
                warehouse.warehouse(),
                Path(open_science.public_root),
                now=datetime.now().astimezone(),
                atc_level=config.atc_level,
                threshold=config.threshold,
            )
    except OpenDataRefused as refusal:
        raise _refused(refusal, "Open dataset") from None
    return dg.MaterializeResult(
        metadata={
            "folder": dg.MetadataValue.path(str(folder)),
            "licence": metadata["license"]["identifier"],
            "dagster/row_count": len(protected.table),
            "suppressed_values": protected.suppressed,
            "preview": dg.MetadataValue.md(markdown_table(protected.table, limit=20)),
        }
    )


class DataChallengeConfig(dg.Config):
    challenge_id: str = Field(default="hdh-challenge", description="Name of the export folder.")
    mart: str = Field(default="hospital_stays", description="persons, hospital_stays or drug_dispensations.")
    test_fraction: float = Field(default=0.2, description="Share of persons in the test split.")


@dg.asset(
    key=["open_science", "data_challenge"],
    deps=[dg.AssetKey(["marts", name]) for name in ("persons", "hospital_stays", "drug_dispensations")],
    group_name=OPEN_SCIENCE_GROUP,
    owners=OPEN_SCIENCE_OWNERS,
    kinds={"duckdb", "parquet"},
    pool=WAREHOUSE_POOL,
    tags={"hdh/layer": "open_science"},
    description="Data-challenge export: one mart de-identified (months, not dates; région, not commune), "
    "persons and stays under challenge pseudonyms (HMAC, key HDH_CHALLENGE_KEY), split train/test by person.",
)
def data_challenge(
    config: DataChallengeConfig, warehouse: WarehouseResource, open_science: OpenScienceResource
) -> dg.MaterializeResult:
    descriptions = read_manifest().column_descriptions()
    try:
        with warehouse.exclusive():
            export = export_challenge(
                warehouse.warehouse(),
                config.mart,
                load_challenge_key(open_science.challenge_key),
                Path(open_science.challenge_root),
                config.challenge_id,
                test_fraction=config.test_fraction,
                now=datetime.now().astimezone(),
                mart_descriptions=descriptions.get(config.mart, {}),
            )
    except OpenDataRefused as refusal:
        raise _refused(refusal, "Data-challenge export") from None
    return dg.MaterializeResult(
        metadata={
            "folder": dg.MetadataValue.path(str(export.folder)),
            "mart": config.mart,
            "train_rows": export.manifest["rows"]["train"],
            "test_rows": export.manifest["rows"]["test"],
            "key_fingerprint": export.manifest["key_fingerprint"],
        }
    )


class SyntheticConfig(dg.Config):
    persons: int = Field(default=2000, description="Size of the synthetic population.")
    year: int = Field(default=2025, description="Year of care (and of the PMSI table names).")
    seed: int = Field(default=42, description="Same seed, same bytes.")


@dg.asset(
    key=["open_science", "synthetic_snds"],
    group_name=OPEN_SCIENCE_GROUP,
    owners=OPEN_SCIENCE_OWNERS,
    kinds={"duckdb", "csv"},
    tags={"hdh/layer": "open_science"},
    description="Synthetic SNDS: every supported table generated from the dataset registry, seeded, with "
    "consistent keys and plausible codes and dates; no real person behind any row, so it is public.",
)
def synthetic_snds(config: SyntheticConfig, open_science: OpenScienceResource) -> dg.MaterializeResult:
    name = f"{config.year}-{config.persons}-{config.seed}"
    target = Path(open_science.public_root) / "synthetic-snds" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        files = generate_snds(staging, persons=config.persons, year=config.year, seed=config.seed)
        rows = {name: sum(1 for _ in path.open(encoding="utf-8")) - 1 for name, path in files.items()}
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dg.MaterializeResult(
        metadata={
            "folder": dg.MetadataValue.path(str(target)),
            "dagster/row_count": sum(rows.values()),
            "rows_by_dataset": rows,
        }
    )
