"""The linkage on Spark: deterministic on the pseudonym, verified; Splink on what remains; 1:1 only.

The probabilistic model is Splink's (Fellegi–Sunter) on its Spark back end, so
the same model runs on one machine (``local[*]``) and on a cluster:

- u by random sampling of cohort × SNDS pairs;
- m by EM on the pairs the records' pseudonyms name (``block_on("psa")``):
  mostly true pairs, plus the wrong and shared pseudonyms EM has to tell
  apart. With no pseudonym pair at all, EM runs on two quasi-identifier
  blocking rules instead;
- term-frequency adjustment of a shared commune (sharing a village says more
  than sharing Paris); the prior is one match per record: 1 / persons.

Stages:

1. Deterministic: the record's BEN_NIR_PSA names persons through
   ``int_pseudonym_persons`` (all its ranks and pseudonyms); persons absent
   from ``marts.persons`` (opted out) are no candidates. Splink scores each
   such pair; below ``min_id_weight`` bits of evidence (the match weight
   without the prior) the pseudonym is not trusted (flag ``id_rejected``) and
   the record goes to stage 2. Twins sharing a pseudonym are told apart by the
   best weight, or stay ambiguous; a person claimed by several records keeps
   the one that agrees best, if one does.
2. Probabilistic: Splink's ``predict_between`` the records without a
   deterministic link and the persons not linked yet, candidate pairs from
   ``comparison.BLOCKING_COLUMNS``.
3. One to one: a record links when exactly one candidate reaches
   ``match_threshold`` (or the best beats the next by ``ambiguity_margin_bits``)
   and no other record claims that person; otherwise it is ambiguous.

Rows are identified by their keys (``hdh_provider``, ``coh_rec_id`` and
``ben_idt_ano``), never by generated numbers, so a re-run or a recomputed
partition names the same rows the same way.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from splink import Linker, SettingsCreator, SparkAPI, block_on

from hdh_pipelines.linkage.comparison import (
    BLOCKING_COLUMNS,
    COHORT_COLUMNS,
    PERSON_COLUMNS,
    PSEUDONYM_RULE_COLUMN,
    blocking_rules,
    comparison_vector_sql,
    comparisons,
    disagreements_sql,
)

RECORD_KEY = ["hdh_provider", "coh_rec_id"]
# Every Splink input has the same columns (name: Spark type), NULL where a side has no such field.
_SPLINK_TYPES = {
    "unique_id": "string",
    "hdh_provider": "string",
    "coh_rec_id": "string",
    "ben_idt_ano": "string",
    "psa": "string",
    "birth_year": "int",
    "birth_month": "int",
    "sex": "int",
    "dpt": "string",
    "commune": "string",
    "death_date": "date",
    "inclusion_date": "date",
}
_SPLINK_COLUMNS = list(_SPLINK_TYPES)
# EM without pseudonyms: each rule estimates the m of the fields it does not block on.
_FALLBACK_TRAINING_COLUMNS = (BLOCKING_COLUMNS[1], BLOCKING_COLUMNS[0])


class _SparkAPI(SparkAPI):
    """Splink's Spark back end, writing its SQL with sqlglot's own Spark dialect.

    Splink rewrites each statement through a subclass of sqlglot's Spark dialect, which only spells
    float casts ``0.5D`` instead of ``CAST(0.5 AS DOUBLE)`` (the same value for Spark). With
    sqlglot's compiled build installed (``sqlglotc``), a subclass of its compiled generator cannot
    be instantiated ("interpreted classes cannot inherit from compiled", sqlglot issue 7923).
    """

    def _setup_for_execute_sql(self, sql: str, physical_name: str) -> str:
        return sqlglot.transpile(sql, read="spark", write="spark", pretty=True)[0]


@dataclass(frozen=True)
class LinkageInputs:
    """The three inputs as Spark DataFrames (staged Parquet at any URI the cluster reads: file://, a shared
    mount, s3a://, abfss://; or the Spark warehouse's pinned tables), opt-outs already set aside."""

    pseudonyms: DataFrame
    persons: DataFrame
    cohort: DataFrame


@dataclass(frozen=True)
class LinkageSettings:
    match_threshold: float = 0.9
    ambiguity_margin_bits: float = 4.0
    min_id_weight: float = 0.0
    u_max_pairs: float = 1e6
    candidate_floor: float = 0.01
    uncertain_floor: float = 0.1
    em_max_iterations: int = 25
    seed: int = 42

    def __post_init__(self) -> None:
        if not 0.5 <= self.match_threshold < 1:
            raise ValueError("match_threshold must lie in [0.5, 1).")
        if not 0 < self.candidate_floor <= self.uncertain_floor < self.match_threshold:
            raise ValueError("Need 0 < candidate_floor <= uncertain_floor < match_threshold.")


@dataclass(frozen=True)
class LinkageResult:
    """The three outputs (Spark DataFrames over one persisted decision table) and the figures."""

    links: DataFrame
    unlinked: DataFrame
    ambiguous: DataFrame
    stats: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    persisted: tuple[DataFrame, ...] = ()
    db_api: SparkAPI | None = None

    def release(self) -> None:
        """Free what the run persisted, Splink's tables included (call after writing the outputs)."""
        for frame in self.persisted:
            frame.unpersist()
        if self.db_api is not None:
            self.db_api.delete_tables_created_by_splink_from_db()


def _splink_frame(frame: DataFrame, columns: dict[str, str], unique_id: str) -> DataFrame:
    """A side harmonised into the Splink input columns."""
    expressions = {"unique_id": unique_id, **columns}
    return frame.selectExpr(
        *[
            f"cast({expressions.get(name, 'null')} as {kind}) as {name}"
            for name, kind in _SPLINK_TYPES.items()
        ]
    )


def _model_parameters(linker: Linker) -> dict[str, dict[str, dict[str, float | None]]]:
    """m and u per field and level, rounded, for metadata and the docs."""
    model = linker.misc.save_model_to_json()
    return {
        comparison["output_column_name"]: {
            level["label_for_charts"]: {
                key[0]: None if not isinstance(level.get(key), float) else round(level[key], 6)
                for key in ("m_probability", "u_probability")
            }
            for level in comparison["comparison_levels"]
            if not level.get("is_null_level")
        }
        for comparison in model["comparisons"]
    }


def _cut(frame: DataFrame) -> DataFrame:
    """The frame's rows, with its plan cut to a scan of them.

    Splink's SQL inlines each input table several times (blocking, the link-only source filter,
    term frequencies); with the harmonisation expressions inlined too, Spark's optimiser spent
    minutes on one statement. A checkpointed input is a leaf in every plan.
    """
    return frame.localCheckpoint(eager=True)


def _pairs_on(left: DataFrame, right: DataFrame, columns: tuple[str, ...]) -> int:
    """How many pairs an equi-join on ``columns`` gives (NULLs never join), to skip an empty EM."""
    return left.join(right, [left[c] == right[c] for c in columns]).count()


def _train(linker: Linker, cohort: DataFrame, snds: DataFrame, settings: LinkageSettings) -> dict[str, Any]:
    """u by random sampling, m by EM on the pseudonym pairs (or quasi-identifier rules without any)."""
    # One pass per comparison: chunks and probes would each be a Spark job over a cross join.
    linker.training.estimate_u_using_random_sampling(
        max_pairs=settings.u_max_pairs, seed=settings.seed, num_chunks=1, min_count_per_level=None
    )
    if _pairs_on(cohort, snds, (PSEUDONYM_RULE_COLUMN,)):
        rules = [(PSEUDONYM_RULE_COLUMN,)]
    else:
        rules = [columns for columns in _FALLBACK_TRAINING_COLUMNS if _pairs_on(cohort, snds, columns)]
    iterations, converged, trained = 0, True, False
    for columns in rules:
        session = linker.training.estimate_parameters_using_expectation_maximisation(
            block_on(*columns), estimate_without_term_frequencies=True
        )
        # The history holds the starting parameters and one entry per iteration.
        done = len(session._core_model_settings_history) - 1
        iterations += done
        converged &= done < settings.em_max_iterations
        trained = True
    return {"em_trained": trained, "em_iterations": iterations, "em_converged": converged and trained}


def _deterministic(pairs: DataFrame, settings: LinkageSettings) -> tuple[DataFrame, DataFrame]:
    """Per record with a pseudonym: the verified link if one, else why not (id_status).

    A candidate is verified when its quasi-identifiers weigh at least ``min_id_weight`` bits of
    evidence; among verified candidates (twins, persons claimed twice) only a strictly best one is kept.
    """
    per_record = Window.partitionBy("rec_id")
    best = (
        pairs.where(F.col("id_weight") >= settings.min_id_weight)
        .withColumn("best", F.max("id_weight").over(per_record))
        .withColumn("persons_named", F.count(F.lit(1)).over(per_record))
        .where("id_weight = best")
        .withColumn("tied", F.count(F.lit(1)).over(per_record))
    )
    per_person = Window.partitionBy("ben_idt_ano")
    unique_best = (
        best.where("tied = 1")
        .withColumn("person_best", F.max("id_weight").over(per_person))
        .withColumn("person_tied", F.sum(F.expr("cast(id_weight = person_best as int)")).over(per_person))
    )
    links = unique_best.where("id_weight = person_best and person_tied = 1").select(
        "rec_id",
        "ben_idt_ano",
        "match_weight",
        "comparison_vector",
        "disagreements",
        F.when(F.col("persons_named") > 1, F.lit("twin_resolved")).alias("twin_flag"),
    )
    # Why a record with a pseudonym has no deterministic link; the first reason that applies.
    status = (
        pairs.groupBy("rec_id")
        .agg(F.max("id_weight").alias("strongest"))
        .join(best.groupBy("rec_id").agg(F.max("tied").alias("tied")), "rec_id", "left")
        .select(
            "rec_id",
            F.when(F.col("strongest") < settings.min_id_weight, "id_rejected")
            .when(F.col("tied") > 1, "id_ambiguous")
            .otherwise("id_conflict")
            .alias("id_status"),
        )
    )
    return links, status


def _scored(predictions: DataFrame) -> DataFrame:
    """Splink's pairs as (record, person): a person is in the SNDS input once per pseudonym."""
    return (
        predictions.selectExpr(
            "unique_id_l as rec_id",
            "ben_idt_ano_r as ben_idt_ano",
            "match_weight",
            "match_probability",
            f"{comparison_vector_sql()} as comparison_vector",
            f"{disagreements_sql()} as disagreements",
        )
        .withColumn(
            "pair_rank",
            F.row_number().over(Window.partitionBy("rec_id", "ben_idt_ano").orderBy(F.desc("match_weight"))),
        )
        .where("pair_rank = 1")
        .drop("pair_rank")
    )


def link(
    spark: SparkSession, inputs: LinkageInputs, settings: LinkageSettings | None = None
) -> LinkageResult:
    """Link the cohort to the persons; see the module docstring for the method."""
    settings = settings or LinkageSettings()
    # Keys, not generated numbers: the same record has the same id whatever Spark recomputes.
    cohort = _splink_frame(inputs.cohort, COHORT_COLUMNS, "to_json(array(hdh_provider, coh_rec_id))")
    cohort = _cut(cohort)
    persons = _cut(_splink_frame(inputs.persons, PERSON_COLUMNS, "ben_idt_ano"))
    pseudonyms = (
        inputs.pseudonyms.selectExpr(
            "upper(trim(ben_nir_psa)) as pseudonym", "ben_idt_ano as pseudonym_person"
        )
        .where("pseudonym is not null")
        .distinct()
    )
    # One SNDS row per (person, pseudonym), a person without any once: EM and stage 1 need the pseudonym.
    snds = (
        persons.join(pseudonyms, persons["ben_idt_ano"] == pseudonyms["pseudonym_person"], "left")
        .withColumn("psa", F.col("pseudonym"))
        .withColumn("unique_id", F.to_json(F.array("ben_idt_ano", "psa")))
        .select(*_SPLINK_COLUMNS)
    )
    snds = _cut(snds)
    cohort_count, person_count = cohort.count(), persons.count()
    if cohort_count == 0 or person_count == 0:
        return _empty_result(spark, cohort, settings, cohort_count, person_count, (cohort, persons, snds))

    db_api = _SparkAPI(spark_session=spark, break_lineage_method="persist", register_udfs_automatically=False)
    prior = min(1.0 / person_count, 0.5)
    linker = Linker(
        [db_api.register(cohort), db_api.register(snds)],
        SettingsCreator(
            link_type="link_only",
            comparisons=comparisons(),
            blocking_rules_to_generate_predictions=blocking_rules(),
            probability_two_random_records_match=prior,
            max_iterations=settings.em_max_iterations,
            additional_columns_to_retain=["ben_idt_ano"],
        ),
        log_level=logging.WARNING,
    )
    linker.table_management.compute_tf_table("commune")
    training = _train(linker, cohort, snds, settings)
    prior_bits = math.log2(prior / (1 - prior))

    id_pairs = (
        _scored(
            linker.inference.predict_between(
                db_api.register(_cut(cohort.where("psa is not null"))),
                db_api.register(_cut(snds.where("psa is not null"))),
                blocking_rules_to_generate_predictions=[block_on(PSEUDONYM_RULE_COLUMN)],
                warning_mode="never",
            ).as_spark_dataframe()
        )
        .withColumn("id_weight", F.col("match_weight") - F.lit(prior_bits))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    det_links, id_status = _deterministic(id_pairs, settings)
    det_links = det_links.persist(StorageLevel.MEMORY_AND_DISK)
    id_status = id_status.persist(StorageLevel.MEMORY_AND_DISK)

    residual = cohort.join(det_links.select(F.col("rec_id").alias("unique_id")), "unique_id", "left_anti")
    available = persons.join(det_links.select("ben_idt_ano"), "ben_idt_ano", "left_anti").select(
        *_SPLINK_COLUMNS
    )
    scored = _scored(
        linker.inference.predict_between(
            db_api.register(_cut(residual)),
            db_api.register(_cut(available)),
            threshold_match_probability=settings.candidate_floor,
            warning_mode="never",
        ).as_spark_dataframe()
    ).persist(StorageLevel.MEMORY_AND_DISK)
    candidate_pairs = scored.count()

    decisions = _decide(cohort, det_links, id_status, scored, settings).persist(StorageLevel.MEMORY_AND_DISK)
    stats = (
        _stats(decisions, settings, cohort_count, person_count)
        | training
        | {"candidate_pairs": candidate_pairs}
    )
    model = _model_parameters(linker)
    return LinkageResult(
        *_outputs(decisions),
        stats=stats,
        model=model,
        persisted=(cohort, persons, snds, id_pairs, det_links, id_status, scored, decisions),
        db_api=db_api,
    )


def _empty_result(
    spark: SparkSession,
    cohort: DataFrame,
    settings: LinkageSettings,
    cohort_count: int,
    person_count: int,
    persisted: tuple[DataFrame, ...],
) -> LinkageResult:
    """No record or no person: every record (if any) unlinked, no candidate; nothing to train on."""
    empty_pairs = spark.createDataFrame(
        [],
        "rec_id string, ben_idt_ano string, match_weight double, match_probability double, "
        "comparison_vector string, disagreements int",
    )
    det_links = empty_pairs.select(
        "rec_id",
        "ben_idt_ano",
        "match_weight",
        "comparison_vector",
        "disagreements",
        F.lit(None).cast("string").alias("twin_flag"),
    )
    id_status = spark.createDataFrame([], "rec_id string, id_status string")
    decisions = _decide(cohort, det_links, id_status, empty_pairs, settings).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    stats = _stats(decisions, settings, cohort_count, person_count) | {
        "em_trained": False,
        "em_iterations": 0,
        "em_converged": False,
        "candidate_pairs": 0,
    }
    return LinkageResult(*_outputs(decisions), stats=stats, persisted=(*persisted, decisions))


def _outputs(decisions: DataFrame) -> tuple[DataFrame, DataFrame, DataFrame]:
    return (
        decisions.where("outcome in ('deterministic', 'probabilistic')").select(
            *RECORD_KEY,
            "ben_idt_ano",
            F.col("outcome").alias("method"),
            "match_probability",
            "match_weight",
            "rule",
            "comparison_vector",
            "flags",
        ),
        decisions.where("outcome = 'unlinked'").select(
            *RECORD_KEY,
            "reason",
            F.col("best_probability").alias("best_match_probability"),
            "flags",
        ),
        decisions.where("outcome = 'ambiguous'").select(
            *RECORD_KEY,
            "reason",
            "candidate_count",
            F.col("best_probability").alias("best_match_probability"),
            "candidate_ben_idt_anos",
            "flags",
        ),
    )


def _decide(
    cohort: DataFrame,
    det_links: DataFrame,
    id_status: DataFrame,
    scored: DataFrame,
    settings: LinkageSettings,
) -> DataFrame:
    """One row per cohort record: its outcome and everything the three outputs show."""
    per_record = Window.partitionBy("rec_id").orderBy(F.desc("match_weight"), F.asc("ben_idt_ano"))
    ranked = scored.withColumn("rank", F.row_number().over(per_record)).withColumn(
        "next_weight", F.lead("match_weight").over(per_record)
    )
    per_record_all = Window.partitionBy("rec_id")
    accepted = F.col("match_probability") >= settings.match_threshold
    summary = (
        ranked.withColumn("accepted_count", F.sum(accepted.cast("int")).over(per_record_all))
        .withColumn(
            "accepted_ids", F.collect_list(F.when(accepted, F.col("ben_idt_ano"))).over(per_record_all)
        )
        .where("rank = 1")
    )
    clear_winner = (F.col("accepted_count") == 1) | (
        F.col("match_weight") - F.coalesce(F.col("next_weight"), F.lit(float("-inf")))
        >= settings.ambiguity_margin_bits
    )
    proposals = summary.withColumn(
        "proposal", F.when((F.col("accepted_count") >= 1) & clear_winner, F.lit(True)).otherwise(F.lit(False))
    ).withColumn("claimants", F.sum(F.col("proposal").cast("int")).over(Window.partitionBy("ben_idt_ano")))
    probabilistic = proposals.select(
        "rec_id",
        F.when(F.col("proposal") & (F.col("claimants") == 1), "probabilistic")
        .when(F.col("accepted_count") >= 1, "ambiguous")
        .otherwise("unlinked")
        .alias("prob_outcome"),
        F.when(F.col("accepted_count") == 0, "below_threshold")
        .when(~F.col("proposal"), "several_candidates")
        .otherwise("candidate_claimed_twice")
        .alias("prob_reason"),
        F.col("ben_idt_ano").alias("prob_person"),
        F.col("comparison_vector").alias("prob_vector"),
        F.col("match_probability").alias("best_probability"),
        F.col("match_weight").alias("prob_weight"),
        F.sort_array(
            F.when(F.col("accepted_count") >= 2, F.col("accepted_ids")).otherwise(F.array("ben_idt_ano"))
        ).alias("candidates"),
    )
    decided = (
        cohort.select(F.col("unique_id").alias("rec_id"), *RECORD_KEY, "psa")
        .join(
            det_links.select(
                "rec_id",
                F.col("ben_idt_ano").alias("det_person"),
                F.col("match_weight").alias("det_weight"),
                F.col("comparison_vector").alias("det_vector"),
                "disagreements",
                "twin_flag",
            ),
            "rec_id",
            "left",
        )
        .join(id_status, "rec_id", "left")
        .join(probabilistic, "rec_id", "left")
        .withColumn(
            "outcome",
            F.when(F.col("det_person").isNotNull(), "deterministic").otherwise(
                F.coalesce("prob_outcome", F.lit("unlinked"))
            ),
        )
    )
    deterministic = F.col("outcome") == "deterministic"
    probabilistic_link = F.col("outcome") == "probabilistic"
    id_flag = F.when(F.col("psa").isNull(), "no_id").when(
        ~deterministic, F.coalesce("id_status", F.lit("id_unknown"))
    )
    partial = F.when(F.col("disagreements") > 0, "quasi_identifiers_partly_disagree")
    flags = F.filter(F.array(id_flag, F.col("twin_flag"), partial), lambda flag: flag.isNotNull())
    ambiguous = F.col("outcome") == "ambiguous"
    return decided.select(
        *RECORD_KEY,
        "outcome",
        F.when(deterministic, F.col("det_person"))
        .when(probabilistic_link, F.col("prob_person"))
        .alias("ben_idt_ano"),
        F.when(probabilistic_link, F.col("best_probability")).alias("match_probability"),
        F.when(deterministic, F.col("det_weight"))
        .when(probabilistic_link, F.col("prob_weight"))
        .alias("match_weight"),
        F.when(deterministic, "ben_nir_psa").when(probabilistic_link, "fellegi_sunter").alias("rule"),
        F.when(deterministic, F.col("det_vector"))
        .when(probabilistic_link, F.col("prob_vector"))
        .alias("comparison_vector"),
        flags.alias("flags"),
        F.when(
            F.col("outcome") == "unlinked",
            F.when(F.col("best_probability").isNull(), "no_candidate").otherwise(F.col("prob_reason")),
        )
        .when(ambiguous, F.col("prob_reason"))
        .alias("reason"),
        "best_probability",
        F.when(ambiguous, F.size("candidates")).alias("candidate_count"),
        F.when(ambiguous, F.col("candidates")).alias("candidate_ben_idt_anos"),
    )


def _stats(
    decisions: DataFrame, settings: LinkageSettings, cohort_count: int, person_count: int
) -> dict[str, Any]:
    """Counts by outcome and the shape of the match-probability distribution, in one Spark job."""
    row = (
        decisions.agg(
            *[
                F.sum(F.expr(f"cast(outcome = '{o}' as int)")).alias(o)
                for o in ("deterministic", "probabilistic", "ambiguous", "unlinked")
            ],
            F.sum(F.expr("cast(array_contains(flags, 'id_rejected') as int)")).alias("id_rejected"),
            F.sum(F.expr("cast(array_contains(flags, 'quasi_identifiers_partly_disagree') as int)")).alias(
                "deterministic_flagged"
            ),
            F.sum(
                F.expr(
                    f"cast(outcome <> 'deterministic' and best_probability >= {settings.uncertain_floor} "
                    f"and best_probability < {settings.match_threshold} as int)"
                )
            ).alias("uncertain"),
            F.sum(F.expr("cast(outcome <> 'deterministic' as int)")).alias("residual"),
            F.avg(F.expr("case when outcome = 'probabilistic' then match_probability end")).alias(
                "mean_probability"
            ),
        )
        .collect()[0]
        .asDict()
    )
    counts = {key: int(row[key] or 0) for key in row if key != "mean_probability"}
    linked = counts["deterministic"] + counts["probabilistic"]
    return {
        "cohort_records": cohort_count,
        "persons": person_count,
        "deterministic_links": counts["deterministic"],
        "probabilistic_links": counts["probabilistic"],
        "unlinked_records": counts["unlinked"],
        "ambiguous_records": counts["ambiguous"],
        "id_rejected_records": counts["id_rejected"],
        "deterministic_links_flagged": counts["deterministic_flagged"],
        "linkage_rate": linked / cohort_count if cohort_count else 0.0,
        "ambiguous_share": counts["ambiguous"] / cohort_count if cohort_count else 0.0,
        # Records whose best candidate sits between "clearly not" and "clearly yes", over all records:
        # a model that separates matches badly piles records up there.
        "uncertain_share": counts["uncertain"] / cohort_count if cohort_count else 0.0,
        "residual_records": counts["residual"],
        "mean_probabilistic_match_probability": row["mean_probability"],
    }
