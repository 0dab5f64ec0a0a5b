{#- Persons treated with a drug class in a calendar year, the rule of the CNAM
    "cartographie des pathologies et des dépenses" for its drug-defined
    conditions: dispensings of the class on at least 3 distinct dates in the
    year, or on at least 2 if one of them was a large pack (about three months
    of treatment). Dispensings for information only and regularisations (no
    box) do not count; neither do lines without a person.

    One row per person and year: the first dispensing date of the year as the
    date of first evidence, and how many distinct dates qualified. -#}
{% macro drug_treated_persons(atc_prefixes, algorithm_version) %}
with class_dispensings as (
    select
        dispensations.ben_idt_ano,
        dispensations.dispensing_date,
        coalesce(presentations.is_large_pack, false) as is_large_pack
    from {{ ref('drug_dispensations') }} as dispensations
    left join {{ ref('int_drug_presentations') }} as presentations
        on presentations.cip13 = cast(dispensations.cip13 as bigint)
    where ({% for prefix in atc_prefixes %}starts_with(dispensations.atc_code, '{{ prefix }}'){{ ' or ' if not loop.last }}{% endfor %})
        and not dispensations.is_for_information_only
        and dispensations.boxes > 0
        and dispensations.ben_idt_ano is not null
        and dispensations.dispensing_date is not null
),

per_year as (
    select
        ben_idt_ano,
        year(dispensing_date) as year,
        count(distinct dispensing_date) as evidence_count,
        bool_or(is_large_pack) as has_large_pack,
        min(dispensing_date) as first_evidence_date
    from class_dispensings
    group by ben_idt_ano, year(dispensing_date)
)

select
    ben_idt_ano,
    year,
    first_evidence_date,
    evidence_count,
    '{{ algorithm_version }}' as algorithm_version
from per_year
where evidence_count >= 3 or (evidence_count >= 2 and has_large_pack)
{% endmacro %}
