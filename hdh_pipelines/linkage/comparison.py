"""How a cohort record and an SNDS person are put side by side: harmonised columns, Splink comparisons.

Both sides are first written in one coding (INSEE): the SNDS writes residence
as BEN_RES_DPT (3 characters: 075, 02A, 971 or 097) plus BEN_RES_COM (3
characters inside the département), the cohort as RES_DPT (75, 2A, 971) and
RES_COM (5-character INSEE commune). Each field is then compared by a Splink
comparison whose levels are Spark SQL conditions over ``<field>_l`` (the
cohort record) and ``<field>_r`` (the person): only functions Spark SQL has
natively (equality, ``abs``, ``datediff``), so no similarity jar is needed on
the cluster. Splink numbers the levels: -1 "a side is missing" (no
evidence), 0 the plain disagreement (the last level), higher values stronger
agreement.
"""

from __future__ import annotations

from typing import Any

import splink.comparison_library as cl
from splink import block_on

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


def _level(label: str, condition: str, **extra: Any) -> dict[str, Any]:
    return {"sql_condition": condition, "label_for_charts": label, **extra}


def _missing(condition: str) -> dict[str, Any]:
    return _level("missing", condition, is_null_level=True)


def _exact_near(field: str) -> list[dict[str, Any]]:
    left, right = f"{field}_l", f"{field}_r"
    return [
        _missing(f"{left} IS NULL OR {right} IS NULL"),
        _level("exact", f"{left} = {right}"),
        _level("one_off", f"abs({left} - {right}) = 1"),
        _level("different", "ELSE"),
    ]


# Residence as one comparison: a shared commune implies a shared département, so comparing them
# separately would count the same evidence twice (the model assumes fields independent given the
# match status). A shared commune under another département is the département typo. Sharing a
# village says more than sharing Paris: the commune level is adjusted by the commune's frequency,
# u(level) / f(commune). Splink takes that u from the level it detects as the exact match on the tf
# column, which here is the département-typo level (plain ``commune_l = commune_r``, u ≈ 1e-5):
# the adjustment then cost every shared commune about 7 bits. The level's own u is the right base.
_RESIDENCE = [
    _missing("(dpt_l IS NULL OR dpt_r IS NULL) AND (commune_l IS NULL OR commune_r IS NULL)"),
    _level(
        "same_commune",
        "commune_l = commune_r AND dpt_l = dpt_r",
        tf_adjustment_column="commune",
        tf_adjustment_weight=1.0,
        disable_tf_exact_match_detection=True,
    ),
    _level("same_commune_other_departement", "commune_l = commune_r"),
    _level("same_departement", "dpt_l = dpt_r"),
    _level("different", "ELSE"),
]

# Death: a person who died before the record's inclusion date contradicts it (inclusion_date only
# exists on the cohort side, so the test is written both ways); both known and within a month
# agree; one known is weak evidence; two deaths far apart contradict.
_DEATH_CONTRADICTS = "coalesce(death_date_r < inclusion_date_l, death_date_l < inclusion_date_r, false)"
_DEATH = [
    _missing("death_date_l IS NULL AND death_date_r IS NULL"),
    _level(
        "same",
        f"NOT {_DEATH_CONTRADICTS} AND abs(datediff(death_date_l, death_date_r)) <= 31",
    ),
    _level("one_known", f"NOT {_DEATH_CONTRADICTS} AND (death_date_l IS NULL OR death_date_r IS NULL)"),
    _level("contradicts", "ELSE"),
]

# name -> levels, strongest agreement first after "missing"; the last level is the plain disagreement.
COMPARISON_LEVELS: dict[str, list[dict[str, Any]]] = {
    "birth_year": _exact_near("birth_year"),
    "birth_month": _exact_near("birth_month"),
    "sex": [
        _missing("sex_l IS NULL OR sex_r IS NULL"),
        _level("same", "sex_l = sex_r"),
        _level("different", "ELSE"),
    ],
    "residence": _RESIDENCE,
    "death": _DEATH,
}


def comparisons() -> list[cl.CustomComparison]:
    """The Splink comparisons of the model (fresh objects: Splink keeps trained values on them)."""
    return [
        cl.CustomComparison(output_column_name=name, comparison_levels=levels)
        for name, levels in COMPARISON_LEVELS.items()
    ]


def level_label_sql(name: str) -> str:
    """Spark SQL naming the level of ``gamma_<name>`` (Splink: -1 missing, then last level = 0)."""
    levels = COMPARISON_LEVELS[name]
    cases = " ".join(
        f"WHEN {-1 if level.get('is_null_level') else len(levels) - 1 - i} THEN '{level['label_for_charts']}'"
        for i, level in enumerate(levels)
    )
    return f"CASE gamma_{name} {cases} END"


def comparison_vector_sql() -> str:
    """Readable vector, e.g. ``birth_year=exact,birth_month=one_off,…``."""
    return (
        "concat_ws(',', "
        + ", ".join(f"concat('{name}=', {level_label_sql(name)})" for name in COMPARISON_LEVELS)
        + ")"
    )


def disagreements_sql() -> str:
    """How many fields plainly disagree (level 0 in Splink's numbering)."""
    return " + ".join(f"CAST(gamma_{name} = 0 AS INT)" for name in COMPARISON_LEVELS)


# Candidate pairs of the probabilistic stage: equal on every column of at least one rule (Splink
# produces each pair once, whatever the number of rules that find it).
BLOCKING_COLUMNS: tuple[tuple[str, ...], ...] = (
    ("birth_year", "birth_month", "sex"),
    ("birth_year", "dpt", "commune"),
    ("birth_year", "birth_month", "dpt"),
    ("birth_month", "sex", "commune"),
)


def blocking_rules() -> list:
    return [block_on(*columns) for columns in BLOCKING_COLUMNS]


# Pairs named by the record's pseudonym: EM learns m on them, and the deterministic stage scores them.
PSEUDONYM_RULE_COLUMN = "psa"
