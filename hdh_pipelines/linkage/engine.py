"""The linkage on Spark: deterministic on the pseudonym, verified; Fellegi–Sunter on what remains; 1:1 only.

Stages (each a handful of Spark jobs, whatever the data size):

1. Deterministic: the record's BEN_NIR_PSA names persons through
   ``int_pseudonym_persons`` (all its ranks and pseudonyms); persons absent
   from ``marts.persons`` (opted out) are no candidates. The pair is compared
   on the quasi-identifiers and weighed (log2 m/u, m first estimated on the
   pseudonym pairs that agree on all fields but one at most); below
   ``min_id_weight`` the pseudonym is not trusted (flag ``id_rejected``) and
   the record goes to stage 2. Twins sharing a pseudonym are told apart by
   the best weight, or stay ambiguous; a person claimed by several records
   keeps the one that agrees best, if one does.
2. Probabilistic, on the records without a deterministic link against the
   persons not yet linked: candidate pairs from the blocking rules
   (``comparison.BLOCKING_RULES``; no rule's pairs repeat an earlier rule's),
   u probabilities from random pairs, m and the match share by EM
   (``fellegi_sunter``), a weight per pair (the vector's, adjusted for the
   frequency of a shared commune) and its match probability.
3. One to one: a record links when exactly one candidate reaches
   ``match_threshold`` (or the best beats the next by ``ambiguity_margin_bits``)
   and no other record claims that person; otherwise it is ambiguous.

Spark only sees integers in the pair stage (record and person indexes and a
pattern id), so the pairs stay small enough to persist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from hdh_pipelines.linkage import fellegi_sunter
from hdh_pipelines.linkage.comparison import (
    BLOCKING_RULES,
    COHORT_COLUMNS,
    COMPARISONS,
    DISAGREE,
    PERSON_COLUMNS,
    RESIDENCE,
    SAME_COMMUNE,
    BlockingRule,
    comparison_vector_label,
    pattern_id_sql,
    pattern_levels,
)

RECORD_KEY = ["hdh_provider", "coh_rec_id"]
_QI = [name for name in PERSON_COLUMNS if name != "ben_idt_ano"]


@dataclass(frozen=True)
class LinkageInputs:
    """Parquet locations (any URI the Spark cluster can read: file://, a shared mount, s3a://…)."""

    pseudonyms: str
    persons: str
    cohort: str


@dataclass(frozen=True)
class LinkageSettings:
    match_threshold: float = 0.9
    ambiguity_margin_bits: float = 4.0
    min_id_weight: float = 0.0
    random_pairs_side: int = 1500
    candidate_floor: float = 0.01
    uncertain_floor: float = 0.1
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
    model: fellegi_sunter.FellegiSunterModel | None = None
    persisted: tuple[DataFrame, ...] = ()

    def release(self) -> None:
        """Free what the run persisted (call after writing the outputs)."""
        for frame in self.persisted:
            frame.unpersist()


def _harmonised(frame: DataFrame, columns: dict[str, str], prefix: str, keys: list[str]) -> DataFrame:
    return frame.selectExpr(
        *[f"{sql} as {name}" if name in keys else f"{sql} as {prefix}{name}" for name, sql in columns.items()]
    )


def _compared(pairs: DataFrame) -> DataFrame:
    """Add every field's level, the pattern id and the count of plain disagreements."""
    with_levels = pairs.selectExpr("*", *[f"{c.level_sql} as {c.name}_level" for c in COMPARISONS])
    disagreements = " + ".join(f"cast({c.name}_level = {DISAGREE} as int)" for c in COMPARISONS)
    return with_levels.selectExpr(
        "*", f"{pattern_id_sql()} as pattern_id", f"{disagreements} as disagreements"
    )


def _pattern_counts(pairs: DataFrame) -> dict[int, int]:
    return {row["pattern_id"]: row["count"] for row in pairs.groupBy("pattern_id").count().collect()}


def _rule_condition(rule: BlockingRule) -> Column:
    condition = F.lit(True)
    for name in rule.columns:
        condition = condition & (F.col(f"c_{name}") == F.col(f"p_{name}"))
    return F.coalesce(condition, F.lit(False))


def _blocked_pairs(records: DataFrame, persons: DataFrame) -> DataFrame:
    """Union of the blocking rules' equi-joins, each pair once (a rule skips pairs of the earlier ones)."""
    pairs = None
    for position, rule in enumerate(BLOCKING_RULES):
        joined = records.join(persons, [records[f"c_{n}"] == persons[f"p_{n}"] for n in rule.columns])
        for earlier in BLOCKING_RULES[:position]:
            joined = joined.where(~_rule_condition(earlier))
        pairs = joined if pairs is None else pairs.unionByName(joined)
    return pairs


def _pattern_table(spark: SparkSession, weights: Any, probabilities: Any) -> DataFrame:
    """Every comparison vector with its label, weight and (blocked) match probability: a small broadcast."""
    rows = [
        (
            i,
            comparison_vector_label(pattern_levels(i)),
            None if weights is None else float(weights[i]),
            None if probabilities is None else float(probabilities[i]),
        )
        for i in range(len(fellegi_sunter.blocked_mask()))
    ]
    schema = "pattern_id int, comparison_vector string, match_weight double, match_probability double"
    return F.broadcast(spark.createDataFrame(rows, schema))


def _id_candidates(cohort: DataFrame, pseudonyms: DataFrame, persons: DataFrame) -> DataFrame:
    """Every (record, person) its pseudonym names, compared; opted-out persons are not in ``persons``."""
    return _compared(
        cohort.where("c_psa is not null")
        .select("rec_idx", "c_psa", *[f"c_{n}" for n in [*_QI, "inclusion_date"]])
        .join(pseudonyms, cohort["c_psa"] == pseudonyms["psa"])
        .drop("psa")
        .dropDuplicates(["rec_idx", "ben_idt_ano"])
        .join(persons, "ben_idt_ano")
    )


def _deterministic(candidates: DataFrame, id_weights: DataFrame, settings: LinkageSettings):
    """Per record with a pseudonym: the verified link if one, else why not (id_status).

    A candidate is verified when its quasi-identifiers weigh at least ``min_id_weight`` (log2 of
    P(vector | same person) / P(vector | anyone)); among verified candidates (twins, persons claimed
    twice) only a strictly best one is kept.
    """
    weighed = candidates.join(id_weights, "pattern_id")
    per_record = Window.partitionBy("rec_idx")
    best = (
        weighed.where(F.col("id_weight") >= settings.min_id_weight)
        .withColumn("best", F.max("id_weight").over(per_record))
        .withColumn("persons_named", F.count(F.lit(1)).over(per_record))
        .where("id_weight = best")
        .withColumn("tied", F.count(F.lit(1)).over(per_record))
    )
    per_person = Window.partitionBy("person_idx")
    unique_best = (
        best.where("tied = 1")
        .withColumn("person_best", F.max("id_weight").over(per_person))
        .withColumn("person_tied", F.sum(F.expr("cast(id_weight = person_best as int)")).over(per_person))
    )
    links = unique_best.where("id_weight = person_best and person_tied = 1").select(
        "rec_idx",
        "ben_idt_ano",
        "person_idx",
        "pattern_id",
        "disagreements",
        F.when(F.col("persons_named") > 1, F.lit("twin_resolved")).alias("twin_flag"),
    )
    # Why a record with a pseudonym has no deterministic link; the first reason that applies.
    status = (
        weighed.groupBy("rec_idx")
        .agg(F.max("id_weight").alias("strongest"))
        .join(best.groupBy("rec_idx").agg(F.max("tied").alias("tied")), "rec_idx", "left")
        .select(
            "rec_idx",
            F.when(F.col("strongest") < settings.min_id_weight, "id_rejected")
            .when(F.col("tied") > 1, "id_ambiguous")
            .otherwise("id_conflict")
            .alias("id_status"),
        )
    )
    return links, status


def link(
    spark: SparkSession, inputs: LinkageInputs, settings: LinkageSettings | None = None
) -> LinkageResult:
    """Link the cohort to the persons; see the module docstring for the method."""
    settings = settings or LinkageSettings()
    cohort = (
        _harmonised(spark.read.parquet(inputs.cohort), COHORT_COLUMNS, "c_", RECORD_KEY)
        .withColumn("rec_idx", F.monotonically_increasing_id())
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    persons = (
        _harmonised(spark.read.parquet(inputs.persons), PERSON_COLUMNS, "p_", ["ben_idt_ano"])
        .withColumn("person_idx", F.monotonically_increasing_id())
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    pseudonyms = (
        spark.read.parquet(inputs.pseudonyms)
        .selectExpr("upper(trim(ben_nir_psa)) as psa", "ben_idt_ano")
        .where("psa is not null")
        .distinct()
    )
    cohort_count, person_count = cohort.count(), persons.count()

    # u from random pairs of the whole cohort and the whole population.
    side = settings.random_pairs_side
    random_records = cohort.sample(fraction=min(1.0, 2 * side / max(cohort_count, 1)), seed=settings.seed)
    random_persons = persons.sample(fraction=min(1.0, 2 * side / max(person_count, 1)), seed=settings.seed)
    random_pairs = _compared(random_records.limit(side).crossJoin(random_persons.limit(side)))
    u = fellegi_sunter.level_frequencies(_pattern_counts(random_pairs))

    # Pseudonym pairs that agree on all but at most one field show what matches look like: a first m,
    # enough to weigh every pseudonym pair and distrust those whose quasi-identifiers say otherwise.
    id_candidates = _id_candidates(cohort, pseudonyms, persons).persist(StorageLevel.MEMORY_AND_DISK)
    first_m = fellegi_sunter.initial_m(_pattern_counts(id_candidates.where("disagreements <= 1")))
    id_weights = _pattern_table(spark, fellegi_sunter.match_weights(first_m, u), None).select(
        "pattern_id", F.col("match_weight").alias("id_weight")
    )
    det_links, id_status = _deterministic(id_candidates, id_weights, settings)
    det_links = det_links.persist(StorageLevel.MEMORY_AND_DISK)
    id_status = id_status.persist(StorageLevel.MEMORY_AND_DISK)
    det_patterns = _pattern_counts(det_links)

    residual = cohort.join(det_links.select("rec_idx"), "rec_idx", "left_anti")
    # Term frequency of the commune: sharing a village says more than sharing a big city.
    commune_shares = F.broadcast(
        persons.where("p_commune is not null")
        .groupBy("p_commune")
        .agg((F.count(F.lit(1)) / F.lit(person_count)).alias("p_commune_share"))
    )
    available = persons.join(det_links.select("person_idx"), "person_idx", "left_anti").join(
        commune_shares, "p_commune", "left"
    )
    pairs = (
        _compared(_blocked_pairs(residual, available))
        .selectExpr(
            "rec_idx",
            "person_idx",
            "pattern_id",
            f"case when residence_level = {SAME_COMMUNE} then p_commune_share end as commune_share",
        )
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    blocked_patterns = _pattern_counts(pairs)
    model = None
    if blocked_patterns:
        model = fellegi_sunter.estimate(blocked_patterns, u, det_patterns)
    patterns = _pattern_table(
        spark, model.match_weights() if model else None, model.match_probabilities() if model else None
    )

    decisions = _decide(
        cohort, persons, det_links, id_status, _scored(pairs, patterns, model), patterns, settings
    )
    decisions = decisions.persist(StorageLevel.MEMORY_AND_DISK)
    stats = _stats(decisions, settings, cohort_count, person_count, sum(blocked_patterns.values()), model)
    for frame in (pairs, det_links, id_status, id_candidates):
        frame.unpersist()
    return LinkageResult(
        links=decisions.where("outcome in ('deterministic', 'probabilistic')").select(
            *RECORD_KEY,
            "ben_idt_ano",
            F.col("outcome").alias("method"),
            "match_probability",
            "match_weight",
            "rule",
            "comparison_vector",
            "flags",
        ),
        unlinked=decisions.where("outcome = 'unlinked'").select(
            *RECORD_KEY,
            "reason",
            F.col("best_probability").alias("best_match_probability"),
            "flags",
        ),
        ambiguous=decisions.where("outcome = 'ambiguous'").select(
            *RECORD_KEY,
            "reason",
            "candidate_count",
            F.col("best_probability").alias("best_match_probability"),
            "candidate_ben_idt_anos",
            "flags",
        ),
        stats=stats,
        model=model,
        persisted=(cohort, persons, decisions),
    )


def _scored(
    pairs: DataFrame, patterns: DataFrame, model: fellegi_sunter.FellegiSunterModel | None
) -> DataFrame:
    """Each blocked pair's weight (the vector's, adjusted for the commune's frequency) and probability.

    For a shared commune v, u is the chance that two random people share v, about its share f(v) of
    the population, rather than the average over communes: the weight gains log2(u_same / f(v)).
    """
    if model is None:
        return pairs.select("rec_idx", "person_idx", "pattern_id").withColumns(
            {"match_weight": F.lit(None).cast("double"), "match_probability": F.lit(None).cast("double")}
        )
    u_same_commune = float(model.u[RESIDENCE][SAME_COMMUNE])
    tf_bits = F.coalesce(F.log2(F.lit(u_same_commune) / F.col("commune_share")), F.lit(0.0))
    weight = F.col("pattern_weight") + tf_bits
    return (
        pairs.join(patterns.select("pattern_id", F.col("match_weight").alias("pattern_weight")), "pattern_id")
        .withColumn("match_weight", weight)
        .withColumn("match_probability", 1 / (1 + F.pow(F.lit(2.0), -(F.lit(model.prior_bits) + weight))))
        .drop("pattern_weight", "commune_share")
    )


def _decide(cohort, persons, det_links, id_status, scored, patterns, settings: LinkageSettings) -> DataFrame:
    """One row per cohort record: its outcome and everything the three outputs show."""
    scored = scored.where(F.col("match_probability") >= settings.candidate_floor)
    per_record = Window.partitionBy("rec_idx").orderBy(F.desc("match_weight"), F.asc("person_idx"))
    ranked = scored.withColumn("rank", F.row_number().over(per_record)).withColumn(
        "next_weight", F.lead("match_weight").over(per_record)
    )
    per_record_all = Window.partitionBy("rec_idx")
    accepted = F.col("match_probability") >= settings.match_threshold
    summary = (
        ranked.withColumn("accepted_count", F.sum(accepted.cast("int")).over(per_record_all))
        .withColumn(
            "accepted_ids", F.collect_list(F.when(accepted, F.col("person_idx"))).over(per_record_all)
        )
        .where("rank = 1")
    )
    clear_winner = (F.col("accepted_count") == 1) | (
        F.col("match_weight") - F.coalesce(F.col("next_weight"), F.lit(float("-inf")))
        >= settings.ambiguity_margin_bits
    )
    claims = Window.partitionBy("person_idx")
    proposals = summary.withColumn(
        "proposal", F.when((F.col("accepted_count") >= 1) & clear_winner, F.lit(True)).otherwise(F.lit(False))
    ).withColumn("claimants", F.sum(F.col("proposal").cast("int")).over(claims))
    probabilistic = proposals.select(
        "rec_idx",
        F.when(F.col("proposal") & (F.col("claimants") == 1), "probabilistic")
        .when(F.col("accepted_count") >= 1, "ambiguous")
        .otherwise("unlinked")
        .alias("prob_outcome"),
        F.when(F.col("accepted_count") == 0, "below_threshold")
        .when(~F.col("proposal"), "several_candidates")
        .otherwise("candidate_claimed_twice")
        .alias("prob_reason"),
        F.col("person_idx").alias("prob_person_idx"),
        F.col("pattern_id").alias("prob_pattern_id"),
        F.col("match_probability").alias("best_probability"),
        F.col("match_weight").alias("prob_weight"),
        F.when(F.col("accepted_count") >= 2, F.col("accepted_ids"))
        .otherwise(F.array(F.col("person_idx")))
        .alias("candidate_idx"),
    )
    labels = patterns.select("pattern_id", "comparison_vector", F.col("match_weight").alias("vector_weight"))
    decided = (
        cohort.select("rec_idx", *RECORD_KEY, "c_psa")
        .join(
            det_links.select(
                "rec_idx",
                F.col("person_idx").alias("det_person_idx"),
                F.col("pattern_id").alias("det_pattern_id"),
                "disagreements",
                "twin_flag",
            ),
            "rec_idx",
            "left",
        )
        .join(id_status, "rec_idx", "left")
        .join(probabilistic, "rec_idx", "left")
        .withColumn(
            "outcome",
            F.when(F.col("det_person_idx").isNotNull(), "deterministic").otherwise(
                F.coalesce("prob_outcome", F.lit("unlinked"))
            ),
        )
        .withColumn(
            "person_idx",
            F.when(F.col("outcome") == "deterministic", F.col("det_person_idx")).when(
                F.col("outcome") == "probabilistic", F.col("prob_person_idx")
            ),
        )
        .withColumn("pattern_id", F.coalesce("det_pattern_id", "prob_pattern_id"))
        .join(labels, "pattern_id", "left")
        .join(persons.select("person_idx", "ben_idt_ano"), "person_idx", "left")
    )
    id_flag = F.when(F.col("c_psa").isNull(), "no_id").when(
        F.col("outcome") != "deterministic", F.coalesce("id_status", F.lit("id_unknown"))
    )
    partial = F.when(F.col("disagreements") > 0, "quasi_identifiers_partly_disagree")
    flags = F.filter(F.array(id_flag, F.col("twin_flag"), partial), lambda flag: flag.isNotNull())
    candidate_ids = F.explode_outer("candidate_idx")
    ambiguous_candidates = (
        decided.where("outcome = 'ambiguous'")
        .select("rec_idx", candidate_ids.alias("person_idx"))
        .join(persons.select("person_idx", "ben_idt_ano"), "person_idx")
        .groupBy("rec_idx")
        .agg(F.sort_array(F.collect_set("ben_idt_ano")).alias("candidate_ben_idt_anos"))
    )
    return decided.join(ambiguous_candidates, "rec_idx", "left").select(
        *RECORD_KEY,
        "outcome",
        "ben_idt_ano",
        F.when(F.col("outcome") == "probabilistic", F.col("best_probability")).alias("match_probability"),
        F.when(F.col("outcome") == "probabilistic", F.col("prob_weight"))
        .otherwise(F.col("vector_weight"))
        .alias("match_weight"),
        F.when(F.col("outcome") == "deterministic", "ben_nir_psa")
        .when(F.col("outcome") == "probabilistic", "fellegi_sunter")
        .alias("rule"),
        "comparison_vector",
        flags.alias("flags"),
        F.when(
            F.col("outcome") == "unlinked",
            F.when(F.col("best_probability").isNull(), "no_candidate").otherwise(F.col("prob_reason")),
        )
        .when(F.col("outcome") == "ambiguous", F.col("prob_reason"))
        .alias("reason"),
        "best_probability",
        F.size("candidate_ben_idt_anos").alias("candidate_count"),
        "candidate_ben_idt_anos",
    )


def _stats(
    decisions: DataFrame,
    settings: LinkageSettings,
    cohort_count: int,
    person_count: int,
    blocked_pairs: int,
    model: fellegi_sunter.FellegiSunterModel | None,
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
    stats: dict[str, Any] = {
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
        "blocked_pairs": blocked_pairs,
    }
    if model is not None:
        stats |= {
            "em_iterations": model.iterations,
            "em_converged": model.converged,
            "blocked_match_share": model.blocked_match_share,
        }
    return stats
