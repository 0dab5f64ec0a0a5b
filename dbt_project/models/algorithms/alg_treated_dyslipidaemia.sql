-- Pharmacologically treated dyslipidaemia (CNAM cartographie des pathologies,
-- "traitements hypolipémiants"): lipid-modifying agents (ATC C10) dispensed
-- on at least 3 distinct dates in the year, or 2 if one was a large pack.
-- Fiche: models/algorithms/_algorithms__models.yml.
{%- set algorithm_version = '2.0.0' %}
{{ config(meta={'algorithm_version': algorithm_version}) }}

with drug as (
    {{ drug_treated_persons(['C10']) }}
)

select
    ben_idt_ano,
    year,
    first_evidence_date,
    evidence_count,
    '{{ algorithm_version }}' as algorithm_version
from drug
