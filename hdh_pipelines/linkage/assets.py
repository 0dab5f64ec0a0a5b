"""Linkage assets: the external cohort linked to the SNDS persons (Splink on Spark), and its quality check.

A thin shell over ``hdh_pipelines.linkage``: one multi-asset stages the
inputs from the warehouse, links on Spark, publishes ``linkage.links``,
``linkage.unlinked`` and ``linkage.ambiguous`` and reports the quality
figures; an asset check evaluated in the same step fails when the linkage
rate or the match-probability distribution degrades.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_pyspark import PySparkResource
from pydantic import Field

from hdh_pipelines.core.constants import WAREHOUSE_POOL
from hdh_pipelines.core.disclosure import coarse_count
from hdh_pipelines.linkage.engine import LinkageSettings
from hdh_pipelines.linkage.pipeline import run_linkage
from hdh_pipelines.linkage.resources import LinkageStorageResource
from hdh_pipelines.linkage.storage import LinkageRoot, LinkageStorageError
from hdh_pipelines.rights.opt_out import EXCLUSIONS_TABLE

LINKS = dg.AssetKey(["linkage", "links"])
UNLINKED = dg.AssetKey(["linkage", "unlinked"])
AMBIGUOUS = dg.AssetKey(["linkage", "ambiguous"])
INPUTS = [
    dg.AssetKey(["intermediate", "int_pseudonym_persons"]),
    dg.AssetKey(["marts", "persons"]),
    dg.AssetKey(["staging", "stg_cohort_ext"]),
    # Staging sets aside the cohort records of opted-out persons (docs/linkage.md).
    dg.AssetKey(EXCLUSIONS_TABLE.split(".")),
]
QUALITY_CHECK = "linkage_quality"
_SPEC: dict[str, Any] = {
    "deps": INPUTS,
    "group_name": "linkage",
    "owners": ["team:data-engineering"],
    "kinds": {"spark", "parquet", "duckdb"},
}


class LinkageConfig(dg.Config):
    match_threshold: float = Field(default=0.9, description="Match probability a probabilistic link needs.")
    ambiguity_margin_bits: float = Field(
        default=4.0, description="How much (log2 Bayes factor) the best candidate must beat the next by."
    )
    min_id_weight: float = Field(
        default=0.0,
        description="Weight (log2 m/u) the quasi-identifiers of a pseudonym link must reach; "
        "below it the pseudonym is distrusted and the record goes to the probabilistic stage.",
    )
    u_max_pairs: float = Field(
        default=1e6,
        description="Random cohort × SNDS pairs Splink samples to estimate u (more: steadier u, slower).",
    )
    min_linkage_rate: float = Field(default=0.9, description="The check fails below this linkage rate.")
    max_uncertain_share: float = Field(
        default=0.05,
        description="The check fails when more records than this have a best candidate "
        "between 0.1 and the threshold (a model that no longer separates matches).",
    )
    truth_table: str | None = Field(
        default=None,
        description="Warehouse table of known true matches (tests, validation samples): "
        "adds precision, recall and F1.",
    )


def _metadata(run) -> dict[str, Any]:
    stats = run.stats
    metadata: dict[str, Any] = {
        "linkage_rate": dg.MetadataValue.float(round(stats["linkage_rate"], 5)),
        "ambiguous_share": dg.MetadataValue.float(round(stats["ambiguous_share"], 5)),
        "uncertain_share": dg.MetadataValue.float(round(stats["uncertain_share"], 5)),
        "cohort_records": coarse_count(stats["cohort_records"]),
        "deterministic_links": coarse_count(stats["deterministic_links"]),
        "probabilistic_links": coarse_count(stats["probabilistic_links"]),
        "deterministic_links_flagged": coarse_count(stats["deterministic_links_flagged"]),
        "id_rejected_records": coarse_count(stats["id_rejected_records"]),
        "unlinked_records": coarse_count(stats["unlinked_records"]),
        "ambiguous_records": coarse_count(stats["ambiguous_records"]),
        "candidate_pairs": coarse_count(stats["candidate_pairs"]),
        "linkage_version": run.version,
        **{name: dg.MetadataValue.float(round(seconds, 2)) for name, seconds in run.durations.items()},
    }
    if stats["em_trained"]:
        metadata |= {
            "em_converged": stats["em_converged"],
            "em_iterations": stats["em_iterations"],
            "model_m_u": dg.MetadataValue.json(run.model_parameters),
        }
    if run.quality:
        metadata |= {
            name: dg.MetadataValue.float(round(run.quality[name], 5))
            for name in ("precision", "recall", "f1")
        }
    return metadata


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            LINKS,
            **_SPEC,
            description="Cohort record → SNDS person, one to one: method, "
            "match probability or weight, comparison vector, flags.",
        ),
        dg.AssetSpec(UNLINKED, **_SPEC, description="Cohort records with no link, and why."),
        dg.AssetSpec(
            AMBIGUOUS,
            **_SPEC,
            description="Cohort records with several equally good "
            "candidates: left unlinked, listed for review.",
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            QUALITY_CHECK,
            asset=LINKS,
            description="Linkage rate at least min_linkage_rate, "
            "match probabilities still well separated, EM converged.",
        ),
    ],
    pool=WAREHOUSE_POOL,
)
def cohort_linkage(
    context: dg.AssetExecutionContext,
    config: LinkageConfig,
    spark: PySparkResource,
    linkage_storage: LinkageStorageResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    settings = LinkageSettings(
        match_threshold=config.match_threshold,
        ambiguity_margin_bits=config.ambiguity_margin_bits,
        min_id_weight=config.min_id_weight,
        u_max_pairs=config.u_max_pairs,
    )
    try:
        run = run_linkage(
            spark.spark_session,
            LinkageRoot.from_uri(linkage_storage.linkage_root),
            linkage_storage.warehouse_path,
            settings,
            truth_table=config.truth_table,
        )
    except LinkageStorageError as error:
        raise dg.Failure(
            description=error.message,
            metadata={"reason": error.reason, "message": error.message},
            allow_retries=False,
        ) from error
    stats = run.stats
    context.log.info(
        f"Linkage {run.version}: rate {stats['linkage_rate']:.3f}, ambiguous {stats['ambiguous_share']:.3f}."
    )
    yield dg.MaterializeResult(
        asset_key=LINKS,
        metadata=_metadata(run)
        | {
            "dagster/row_count": coarse_count(stats["deterministic_links"] + stats["probabilistic_links"]),
            "warehouse_view": "linkage.links",
        },
    )
    yield dg.MaterializeResult(
        asset_key=UNLINKED,
        metadata={
            "dagster/row_count": coarse_count(stats["unlinked_records"]),
            "warehouse_view": "linkage.unlinked",
        },
    )
    yield dg.MaterializeResult(
        asset_key=AMBIGUOUS,
        metadata={
            "dagster/row_count": coarse_count(stats["ambiguous_records"]),
            "warehouse_view": "linkage.ambiguous",
        },
    )

    failures = []
    if stats["linkage_rate"] < config.min_linkage_rate:
        failures.append(f"linkage rate {stats['linkage_rate']:.1%} is below {config.min_linkage_rate:.0%}")
    if stats["uncertain_share"] > config.max_uncertain_share:
        failures.append(
            f"{stats['uncertain_share']:.1%} of the records have an uncertain best candidate "
            f"(at most {config.max_uncertain_share:.0%} allowed)"
        )
    if stats["em_trained"] and not stats["em_converged"]:
        failures.append("EM did not converge")
    yield dg.AssetCheckResult(
        check_name=QUALITY_CHECK,
        asset_key=LINKS,
        passed=not failures,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(failures).capitalize() + "." if failures else "Linkage quality within bounds.",
        metadata={
            "reason": "linkage_degraded" if failures else "ok",
            "linkage_rate": dg.MetadataValue.float(round(stats["linkage_rate"], 5)),
            "min_linkage_rate": dg.MetadataValue.float(config.min_linkage_rate),
            "uncertain_share": dg.MetadataValue.float(round(stats["uncertain_share"], 5)),
        },
    )
