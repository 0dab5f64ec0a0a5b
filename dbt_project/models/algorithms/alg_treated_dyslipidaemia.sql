-- Pharmacologically treated dyslipidaemia (CNAM cartographie des pathologies,
-- "traitements hypolipémiants"): lipid-modifying agents (ATC C10) dispensed
-- on at least 3 distinct dates in the year, or 2 if one was a large pack.
-- Reference and inputs: models/algorithms/_algorithms__models.yml.
{%- set algorithm_version = '1.0.0' %}
{{ config(meta={'algorithm_version': algorithm_version}) }}

{{ drug_treated_persons(['C10'], algorithm_version) }}
