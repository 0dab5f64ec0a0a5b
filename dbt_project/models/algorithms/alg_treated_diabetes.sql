-- Diabetes (CNAM cartographie des pathologies, "diabète"): a person is
-- selected for a year by any of three criteria (fiche: models/algorithms/_algorithms__models.yml):
--   drug: antidiabetics (ATC A10 but benfluorex A10BX06) dispensed on at least 3 distinct dates in the
--         year or in the year before (each year on its own), or 2 if one was a large pack;
--   ALD: a long-term illness with an ICD-10 code E10 to E14 in force in the year;
--   hospital: an MCO stay of the year or the year before with E10 to E14 as DP,
--         DR or DAS of the stay (a medical unit's DP or DR alone does not count:
--         the sources cited name the stay's positions).
{%- set algorithm_version = '3.0.0' %}
{%- set diabetes_icd10 = ['E10', 'E11', 'E12', 'E13', 'E14'] %}
{{ config(meta={'algorithm_version': algorithm_version}) }}

with drug as (
    -- Benfluorex (A10BX06, Mediator, withdrawn in 2009) was prescribed beyond
    -- diabetes; SCALPEL-Extraction's Diabetes drug class excludes it.
    {{ drug_treated_persons(['A10'], excluded_atc_prefixes=['A10BX06'], years_back=1) }}
),

long_term_illness as (
    {{ long_term_illness_evidence(diabetes_icd10) }}
),

hospital as (
    {{ hospital_diagnosis_evidence(diabetes_icd10, ['DP', 'DR', 'DAS'], years_back=1) }}
),

evidence as (
    select ben_idt_ano, year, first_evidence_date as evidence_date, evidence_count, 'drug' as criterion
    from drug
    union all
    select ben_idt_ano, year, evidence_date, 1, 'ald'
    from long_term_illness
    union all
    select ben_idt_ano, year, evidence_date, 1, 'hospital'
    from hospital
)

select
    ben_idt_ano,
    year,
    min(evidence_date) as first_evidence_date,
    sum(evidence_count) as evidence_count,
    bool_or(criterion = 'drug') as has_drug_criterion,
    bool_or(criterion = 'ald') as has_ald_criterion,
    bool_or(criterion = 'hospital') as has_hospital_criterion,
    '{{ algorithm_version }}' as algorithm_version
from evidence
group by ben_idt_ano, year
