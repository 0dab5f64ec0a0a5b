-- Hospitalisation for acute coronary syndrome (CNAM cartographie des
-- pathologies, "syndrome coronaire aigu"): an MCO stay of the PMSI year whose
-- principal diagnosis is I21 to I24, reaching exactly one person (twins share
-- the PMSI pseudonym: such stays are not guessed). The stays are those the
-- SNDS rules retain (hospital_stays: no duplicate FINESS, no error GHM; a stay
-- without GHM counts). Fiche: models/algorithms/_algorithms__models.yml.
{%- set algorithm_version = '2.0.0' %}
{{ config(meta={'algorithm_version': algorithm_version}) }}

with coronary_stays as (
    select ben_idt_ano, pmsi_year, stay_start_date
    from {{ ref('hospital_stays') }}
    where person_link_status = 'linked'
        and {{ has_code_prefix('principal_diagnosis', ['I21', 'I22', 'I23', 'I24']) }}
)

select
    ben_idt_ano,
    pmsi_year as year,
    min(stay_start_date) as first_evidence_date,
    count(*) as evidence_count,
    '{{ algorithm_version }}' as algorithm_version
from coronary_stays
group by ben_idt_ano, pmsi_year
