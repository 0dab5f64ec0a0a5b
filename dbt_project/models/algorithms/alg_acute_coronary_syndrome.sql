-- Hospitalisation for acute coronary syndrome (CNAM cartographie des
-- pathologies, "syndrome coronaire aigu"): an MCO stay of the PMSI year whose
-- principal diagnosis is I21 to I24. The year is the PMSI year (the stay's
-- discharge year); stays GENRSA could not group (GHM 90…) do not count, and
-- neither do stays that reach no single person (twins share the PMSI
-- pseudonym: such stays are not guessed). Reference and inputs:
-- models/algorithms/_algorithms__models.yml.
{%- set algorithm_version = '1.0.0' %}
{{ config(meta={'algorithm_version': algorithm_version}) }}

with coronary_stays as (
    select ben_idt_ano, pmsi_year, stay_start_date
    from {{ ref('hospital_stays') }}
    where person_link_status = 'linked'
        and not is_error_stay
        and left(principal_diagnosis, 3) in ('I21', 'I22', 'I23', 'I24')
)

select
    ben_idt_ano,
    pmsi_year as year,
    min(stay_start_date) as first_evidence_date,
    count(*) as evidence_count,
    '{{ algorithm_version }}' as algorithm_version
from coronary_stays
group by ben_idt_ano, pmsi_year
