"""Linkage assets: the external cohort linked to the SNDS persons (Splink on Spark), and its quality check.

A thin shell over ``hdh_pipelines.linkage.pipeline``: one graph-backed
multi-asset in three steps, so that the Spark application never holds the
warehouse pool (DuckDB has a single writer; Spark may run for a long time):

1. ``stage_linkage_inputs`` (pool ``duckdb_warehouse``) copies the inputs out
   of a DuckDB warehouse as Parquet under the linkage root, or, on the Spark
   engine, pins the warehouse tables they read to their current files;
2. ``link_on_spark`` (no pool) links them on Spark (reading the pinned marts
   directly on the Spark engine) and writes the outputs;
3. ``publish_linkage`` (pool ``duckdb_warehouse``) switches the warehouse
   views ``linkage.links``, ``linkage.unlinked`` and ``linkage.ambiguous``,
   reports the quality figures and evaluates the asset check, which fails
   when the linkage rate or the match-probability distribution degrades.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_pyspark import PySparkResource
from pydantic import Field

from hdh_pipelines.core.constants import WAREHOUSE_POOL
from hdh_pipelines.core.disclosure import coarse_count
from hdh_pipelines.linkage.pipeline import LinkageRun, StagedInputs, link_staged, publish, stage
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
_OWNERS = ["team:data-engineering"]
_KINDS = {"spark", "parquet", "duckdb"}


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


class StageConfig(dg.Config):
    truth_table: str | None = None


class LinkConfig(dg.Config):
    match_threshold: float
    ambiguity_margin_bits: float
    min_id_weight: float
    u_max_pairs: float


class CheckConfig(dg.Config):
    min_linkage_rate: float
    max_uncertain_share: float


def _failure(error: LinkageStorageError) -> dg.Failure:
    return dg.Failure(
        description=error.message,
        metadata={"reason": error.reason, "message": error.message},
        allow_retries=False,
    )


# One Nothing input per upstream table, not one fan-in input: in a job that also builds the upstream
# assets, a fan-in inside this graph would nest multi-step input sources, which Dagster refuses.
@dg.op(
    pool=WAREHOUSE_POOL,
    ins={"_".join(key.path): dg.In(dg.Nothing) for key in INPUTS},
    tags={"hdh/layer": "linkage"},
)
def stage_linkage_inputs(config: StageConfig, linkage_storage: LinkageStorageResource) -> StagedInputs:
    """A new version's inputs: copied out of a DuckDB warehouse (opt-outs set aside), pinned on Spark's."""
    try:
        with linkage_storage.warehouse.exclusive():
            return stage(
                LinkageRoot.from_uri(linkage_storage.linkage_root),
                linkage_storage.warehouse.warehouse(),
                truth_table=config.truth_table,
            )
    except LinkageStorageError as error:
        raise _failure(error) from error


@dg.op(tags={"hdh/layer": "linkage"})
def link_on_spark(
    config: LinkConfig, spark: PySparkResource, linkage_storage: LinkageStorageResource, staged: StagedInputs
) -> LinkageRun:
    """Link the staged version on Spark and write its outputs; opens no warehouse, holds no pool."""
    # Splink is imported by the step that links, not by every process that loads the code location.
    from hdh_pipelines.linkage.engine import LinkageSettings

    settings = LinkageSettings(
        match_threshold=config.match_threshold,
        ambiguity_margin_bits=config.ambiguity_margin_bits,
        min_id_weight=config.min_id_weight,
        u_max_pairs=config.u_max_pairs,
    )
    try:
        return link_staged(
            spark.spark_session, LinkageRoot.from_uri(linkage_storage.linkage_root), staged, settings
        )
    except LinkageStorageError as error:
        raise _failure(error) from error


@dg.op(
    pool=WAREHOUSE_POOL,
    out={
        "links": dg.Out(dg.Nothing),
        "unlinked": dg.Out(dg.Nothing),
        "ambiguous": dg.Out(dg.Nothing),
        "quality": dg.Out(dg.Nothing),
    },
    tags={"hdh/layer": "linkage"},
)
def publish_linkage(
    context: dg.OpExecutionContext,
    config: CheckConfig,
    linkage_storage: LinkageStorageResource,
    linked: LinkageRun,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Switch the warehouse views to the run's version; report its figures and the quality check."""
    try:
        with linkage_storage.warehouse.exclusive():
            run = publish(
                LinkageRoot.from_uri(linkage_storage.linkage_root),
                linkage_storage.warehouse.warehouse(),
                linked,
            )
    except LinkageStorageError as error:
        raise _failure(error) from error
    stats = run.stats
    context.log.info(
        f"Linkage {run.version}: rate {stats['linkage_rate']:.3f}, ambiguous {stats['ambiguous_share']:.3f}."
    )
    yield dg.Output(
        None,
        output_name="links",
        metadata=_metadata(run)
        | {
            "dagster/row_count": coarse_count(stats["deterministic_links"] + stats["probabilistic_links"]),
            "warehouse_view": "linkage.links",
        },
    )
    for name, count in (("unlinked", stats["unlinked_records"]), ("ambiguous", stats["ambiguous_records"])):
        yield dg.Output(
            None,
            output_name=name,
            metadata={"dagster/row_count": coarse_count(count), "warehouse_view": f"linkage.{name}"},
        )
    yield _quality_check(stats, config)


def _quality_check(stats: dict[str, Any], config: CheckConfig) -> dg.AssetCheckResult:
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
    return dg.AssetCheckResult(
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


@dg.config_mapping
def _step_config(config: LinkageConfig) -> dict[str, Any]:
    """One run config for the asset (``LinkageConfig``), spread over its three steps."""
    return {
        "stage_linkage_inputs": {"config": {"truth_table": config.truth_table}},
        "link_on_spark": {
            "config": {
                "match_threshold": config.match_threshold,
                "ambiguity_margin_bits": config.ambiguity_margin_bits,
                "min_id_weight": config.min_id_weight,
                "u_max_pairs": config.u_max_pairs,
            }
        },
        "publish_linkage": {
            "config": {
                "min_linkage_rate": config.min_linkage_rate,
                "max_uncertain_share": config.max_uncertain_share,
            }
        },
    }


@dg.graph_multi_asset(
    outs={
        "links": dg.AssetOut(
            key=LINKS,
            owners=_OWNERS,
            kinds=_KINDS,
            description="Cohort record → SNDS person, one to one: method, "
            "match probability or weight, comparison vector, flags.",
        ),
        "unlinked": dg.AssetOut(
            key=UNLINKED, owners=_OWNERS, kinds=_KINDS, description="Cohort records with no link, and why."
        ),
        "ambiguous": dg.AssetOut(
            key=AMBIGUOUS,
            owners=_OWNERS,
            kinds=_KINDS,
            description="Cohort records with several equally good "
            "candidates: left unlinked, listed for review.",
        ),
    },
    # Order-only dependencies: the steps read the warehouse tables themselves, not through an IO manager.
    ins={"_".join(key.path): dg.AssetIn(key=key, dagster_type=dg.Nothing) for key in INPUTS},
    check_specs=[
        dg.AssetCheckSpec(
            QUALITY_CHECK,
            asset=LINKS,
            description="Linkage rate at least min_linkage_rate, "
            "match probabilities still well separated, EM converged.",
        ),
    ],
    group_name="linkage",
    config=_step_config,
)
def cohort_linkage(
    intermediate_int_pseudonym_persons,
    marts_persons,
    staging_stg_cohort_ext,
    intermediate_int_opt_out_exclusions,
):
    staged = stage_linkage_inputs(
        intermediate_int_pseudonym_persons=intermediate_int_pseudonym_persons,
        marts_persons=marts_persons,
        staging_stg_cohort_ext=staging_stg_cohort_ext,
        intermediate_int_opt_out_exclusions=intermediate_int_opt_out_exclusions,
    )
    links, unlinked, ambiguous, quality = publish_linkage(link_on_spark(staged))
    return {
        "links": links,
        "unlinked": unlinked,
        "ambiguous": ambiguous,
        "linkage__links_linkage_quality": quality,
    }
