-- Hospitalisation for acute coronary syndrome (CNAM cartographie des
-- pathologies, "syndrome coronaire aigu"): an MCO stay of the PMSI year with
-- I21 to I24 as the principal diagnosis of the stay or of one of its medical
-- units ("DP d'un des RUM", Documentation-SNDS fiche Cartographie des
-- pathologies, whose SAS code reads T_MCOaaUM.DGN_PAL), reaching exactly one
-- person (twins share the PMSI pseudonym: such stays are not guessed). The
-- stays are those the SNDS rules retain (hospital_stay_diagnoses: no
-- duplicate FINESS, no error GHM; a stay without GHM counts). Fiche:
-- models/algorithms/_algorithms__models.yml.
{%- set algorithm_version = '3.0.0' %}
{{ config(meta={'algorithm_version': algorithm_version}) }}

with coronary_stays as (
    -- The stay's DP is one of its units' DP; reading both keeps a stay whose units were not delivered.
    {{ hospital_diagnosis_evidence(['I21', 'I22', 'I23', 'I24'], ['DP', 'DP_UM']) }}
)

select
    ben_idt_ano,
    year,
    min(evidence_date) as first_evidence_date,
    count(*) as evidence_count,
    '{{ algorithm_version }}' as algorithm_version
from coronary_stays
group by ben_idt_ano, year
