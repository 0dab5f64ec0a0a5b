"""How a cohort record and an SNDS person are put side by side: harmonised columns and comparison levels.

Both sides are first written in one coding (INSEE): the SNDS writes residence
as BEN_RES_DPT (3 characters: 075, 02A, 971 or 097) plus BEN_RES_COM (3
characters inside the département), the cohort as RES_DPT (75, 2A, 971) and
RES_COM (5-character INSEE commune). Each field is then compared into a small
integer level; level 0 always means "a side is missing" (no evidence either
way), level 1 "disagree", higher levels stronger agreement. Every level is a
Spark SQL expression over the columns ``c_<field>`` (cohort) and
``p_<field>`` (person), so one projection computes a pair's whole vector.
"""

from __future__ import annotations

from dataclasses import dataclass

# Harmonised cohort record: (hdh_provider, coh_rec_id) identifies it.
COHORT_COLUMNS = {
    "hdh_provider": "hdh_provider",
    "coh_rec_id": "coh_rec_id",
    "psa": "nullif(upper(trim(ben_nir_psa)), '')",
    "birth_year": "cast(nai_ann as int)",
    "birth_month": "case when cast(nai_moi as int) between 1 and 12 then cast(nai_moi as int) end",
    "sex": "case when cast(sex_cod as int) in (1, 2) then cast(sex_cod as int) end",
    "dpt": "case when length(trim(res_dpt)) = 1 then '0' || trim(res_dpt) "
    "else nullif(upper(trim(res_dpt)), '') end",
    "commune": "case when length(trim(res_com)) = 5 then upper(trim(res_com)) end",
    "death_date": "cast(dcd_dte as date)",
    "inclusion_date": "cast(inc_dte as date)",
}

# Harmonised SNDS person (marts.persons): overseas residence is 97x + 2 digits (SNDS 971/101 or 097/101).
_SNDS_DPT = "upper(trim(residence_departement))"
_SNDS_COM = "upper(trim(residence_commune))"
PERSON_COLUMNS = {
    "ben_idt_ano": "ben_idt_ano",
    "birth_year": "cast(birth_year as int)",
    "birth_month": "case when cast(birth_month as int) between 1 and 12 then cast(birth_month as int) end",
    "sex": "case when cast(sex_code as int) in (1, 2) then cast(sex_code as int) end",
    "dpt": f"case when {_SNDS_DPT} = '097' then '97' || substr({_SNDS_COM}, 1, 1) "
    f"when {_SNDS_DPT} like '97_' then {_SNDS_DPT} "
    f"when length({_SNDS_DPT}) = 3 and {_SNDS_DPT} like '0%' then substr({_SNDS_DPT}, 2, 2) "
    f"else nullif({_SNDS_DPT}, '') end",
    "commune": f"case when length({_SNDS_COM}) <> 3 then null "
    f"when {_SNDS_DPT} like '97_' or {_SNDS_DPT} = '097' then '97' || {_SNDS_COM} "
    f"when length({_SNDS_DPT}) = 3 then substr({_SNDS_DPT}, 2, 2) || {_SNDS_COM} end",
    "death_date": "cast(death_date as date)",
}


@dataclass(frozen=True)
class Comparison:
    """One compared field: the SQL giving its level and the levels' names (index = level)."""

    name: str
    level_sql: str
    labels: tuple[str, ...]

    @property
    def level_count(self) -> int:
        return len(self.labels)


def _exact_near_sql(field: str) -> str:
    c, p = f"c_{field}", f"p_{field}"
    return (
        f"case when {c} is null or {p} is null then 0 when {c} = {p} then 3 "
        f"when abs({c} - {p}) = 1 then 2 else 1 end"
    )


def _equal_sql(field: str) -> str:
    c, p = f"c_{field}", f"p_{field}"
    return f"case when {c} is null or {p} is null then 0 when {c} = {p} then 2 else 1 end"


# Residence as one comparison: a shared commune implies a shared département, so comparing them
# separately would count the same evidence twice (the model assumes fields independent given the
# match status). A shared commune under another département is the département typo.
_RESIDENCE_SQL = (
    "case when (c_dpt is null or p_dpt is null) and (c_commune is null or p_commune is null) then 0 "
    "when c_commune = p_commune and c_dpt = p_dpt then 4 "
    "when c_commune = p_commune then 3 "
    "when c_dpt = p_dpt then 2 else 1 end"
)

# Death: both known and within a month agree; one known is weak evidence; a known death before the
# record's inclusion date, or two deaths far apart, contradict.
_DEATH_SQL = (
    "case when p_death_date is not null and c_inclusion_date is not null "
    "and p_death_date < c_inclusion_date then 1 "
    "when c_death_date is null and p_death_date is null then 0 "
    "when c_death_date is null or p_death_date is null then 2 "
    "when abs(datediff(c_death_date, p_death_date)) <= 31 then 3 else 1 end"
)

COMPARISONS: tuple[Comparison, ...] = (
    Comparison("birth_year", _exact_near_sql("birth_year"), ("missing", "different", "one_off", "exact")),
    Comparison("birth_month", _exact_near_sql("birth_month"), ("missing", "different", "one_off", "exact")),
    Comparison("sex", _equal_sql("sex"), ("missing", "different", "same")),
    Comparison(
        "residence",
        _RESIDENCE_SQL,
        ("missing", "different", "same_departement", "same_commune_other_departement", "same_commune"),
    ),
    Comparison("death", _DEATH_SQL, ("missing", "contradicts", "one_known", "same")),
)
DISAGREE = 1
RESIDENCE = next(k for k, c in enumerate(COMPARISONS) if c.name == "residence")
SAME_COMMUNE = COMPARISONS[RESIDENCE].labels.index("same_commune")


@dataclass(frozen=True)
class BlockingRule:
    """Candidate pairs agree exactly on ``columns``; ``levels`` says the same in comparison levels.

    The second form lets the model know exactly which vectors blocking can produce
    (see ``fellegi_sunter.blocked_mask``).
    """

    columns: tuple[str, ...]
    levels: dict[str, tuple[int, ...]]


BLOCKING_RULES: tuple[BlockingRule, ...] = (
    BlockingRule(
        ("birth_year", "birth_month", "sex"), {"birth_year": (3,), "birth_month": (3,), "sex": (2,)}
    ),
    BlockingRule(("birth_year", "dpt", "commune"), {"birth_year": (3,), "residence": (4,)}),
    BlockingRule(
        ("birth_year", "birth_month", "dpt"), {"birth_year": (3,), "birth_month": (3,), "residence": (2, 4)}
    ),
    BlockingRule(("birth_month", "sex", "commune"), {"birth_month": (3,), "sex": (2,), "residence": (3, 4)}),
)


def comparison_vector_label(levels: tuple[int, ...]) -> str:
    """Readable vector, e.g. ``birth_year=exact,birth_month=one_off,…``."""
    return ",".join(f"{c.name}={c.labels[level]}" for c, level in zip(COMPARISONS, levels, strict=True))


def pattern_id_sql() -> str:
    """One integer per comparison vector (mixed radix over the fields' level counts)."""
    terms, radix = [], 1
    for comparison in COMPARISONS:
        terms.append(f"{comparison.name}_level * {radix}")
        radix *= comparison.level_count
    return " + ".join(terms)


def pattern_levels(pattern_id: int) -> tuple[int, ...]:
    levels = []
    for comparison in COMPARISONS:
        pattern_id, level = divmod(pattern_id, comparison.level_count)
        levels.append(level)
    return tuple(levels)
