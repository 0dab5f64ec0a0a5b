{#- Building blocks of the targeting algorithms (models/algorithms/), each the
    criterion of the CNAM "cartographie des pathologies et des dépenses"
    (méthodologie médicale) it implements. They read the marts, where the SNDS
    rules are already applied once (macros/dcir_rules.sql, pmsi_rules.sql):
    dispensings are netted of their regularisations and hold no line for
    information only; hospital stays hold no duplicate FINESS, no error GHM;
    persons who opted out are not there. -#}

{#- Drug criterion: dispensings of the ATC class on at least 3 distinct dates
    in one calendar year, or on at least 2 if one of them was a large pack
    (about three months of treatment). A year so treated selects the person
    for itself and, with years_back, for the years_back observed years after
    it (the dates of two years are never pooled). One row per person and
    selected year: the first dispensing date and the count of distinct dates
    of the treated years it rests on. Codes under excluded_atc_prefixes do not
    count, though their class does. -#}
{% macro drug_treated_persons(atc_prefixes, excluded_atc_prefixes=[], years_back=0) %}
with class_dispensings as (
    select
        dispensations.ben_idt_ano,
        dispensations.dispensing_date,
        coalesce(presentations.is_large_pack, false) as is_large_pack
    from {{ ref('drug_dispensations') }} as dispensations
    left join {{ ref('int_drug_presentations') }} as presentations
        on presentations.cip13 = cast(dispensations.cip13 as bigint)
    where {{ has_code_prefix('dispensations.atc_code', atc_prefixes) }}
        {%- if excluded_atc_prefixes %}
        and not {{ has_code_prefix('dispensations.atc_code', excluded_atc_prefixes) }}
        {%- endif %}
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
),

treated_years as (
    select ben_idt_ano, year, first_evidence_date, evidence_count
    from per_year
    where evidence_count >= 3 or (evidence_count >= 2 and has_large_pack)
)

select
    treated_years.ben_idt_ano,
    years.year,
    min(treated_years.first_evidence_date) as first_evidence_date,
    cast(sum(treated_years.evidence_count) as {{ dbt.type_bigint() }}) as evidence_count
from treated_years
inner join ({{ observed_years() }}) as years
    on treated_years.year between years.year - {{ years_back }} and years.year
group by treated_years.ben_idt_ano, years.year
{% endmacro %}


{#- True when the code starts with one of the prefixes (ICD-10 without the dot,
    ATC); false, not NULL, for a NULL code. -#}
{% macro has_code_prefix(column, prefixes) -%}
    coalesce(({% for prefix in prefixes %}{{ column }} like '{{ prefix }}%'{{ ' or ' if not loop.last }}{% endfor %}), false)
{%- endmacro %}


{#- The calendar years the data cover (a dispensing or a PMSI year): the years
    for which a long-lasting criterion (an ALD in force, a stay of the year
    before) can select a person. -#}
{% macro observed_years() %}
    select distinct year(dispensing_date) as year
    from {{ ref('drug_dispensations') }}
    where dispensing_date is not null
    union
    select distinct pmsi_year
    from {{ ref('hospital_stays') }}
{% endmacro %}


{#- Long-term illness (ALD) criterion: an ALD with one of the ICD-10 codes in
    force at some point of the year (started by its end, not ended before its
    start; no end date means in force). One row per person, year and ALD
    period, dated by the ALD's start. -#}
{% macro long_term_illness_evidence(icd10_prefixes) %}
    select illnesses.ben_idt_ano, years.year, illnesses.start_date as evidence_date
    from {{ ref('long_term_illnesses') }} as illnesses
    inner join ({{ observed_years() }}) as years
        on illnesses.start_date <= make_date(years.year, 12, 31)
        and (illnesses.end_date is null or illnesses.end_date >= make_date(years.year, 1, 1))
    where {{ has_code_prefix('illnesses.icd10_code', icd10_prefixes) }}
{% endmacro %}


{#- Hospital criterion: an MCO stay with one of the ICD-10 codes in one of
    the diagnosis_types positions (DP, DR, DAS of the stay; DP_UM, DR_UM of
    one of its medical units), in the year or in one of the years_back years
    before it, reaching exactly one person. One row per person, year and stay
    (however many positions hold the code), dated by the stay's start. -#}
{% macro hospital_diagnosis_evidence(icd10_prefixes, diagnosis_types, years_back=0) %}
    select distinct
        diagnoses.ben_idt_ano,
        years.year,
        diagnoses.stay_start_date as evidence_date,
        diagnoses.pmsi_year,
        diagnoses.eta_num,
        diagnoses.rsa_num
    from {{ ref('hospital_stay_diagnoses') }} as diagnoses
    inner join ({{ observed_years() }}) as years
        on diagnoses.pmsi_year between years.year - {{ years_back }} and years.year
    where diagnoses.person_link_status = 'linked'
        and diagnoses.diagnosis_type in ({% for kind in diagnosis_types %}'{{ kind }}'{{ ', ' if not loop.last }}{% endfor %})
        and {{ has_code_prefix('diagnoses.icd10_code', icd10_prefixes) }}
{% endmacro %}
