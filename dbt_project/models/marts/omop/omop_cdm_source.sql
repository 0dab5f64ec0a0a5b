-- OMOP CDM 5.4 CDM_SOURCE: one row describing this CDM instance. The source
-- release is the load of the latest delivery the CDM is built from (greatest
-- hdh_loaded_at of the staging models it reads); the vocabulary version is
-- Athena's (row 'None' of its VOCABULARY table) once the OHDSI vocabularies
-- are loaded (docs/normalisation.md). Without any delivery there is no
-- source release to describe, hence no row.
{%- set vocabulary_schema = var('hdh_omop_vocabulary_schema') %}

with loads as (
    {%- for model in ['stg_ir_ben_r', 'stg_er_prs_f', 'stg_er_pha_f', 'stg_t_mco_b', 'stg_t_mco_c',
                      'stg_t_mco_d', 'stg_ir_pha_r', 'stg_ir_cim_v'] %}
    select max(hdh_loaded_at) as loaded_at from {{ ref(model) }}
    {{- '\n    union all' if not loop.last }}
    {%- endfor %}
),

vocabulary as (
    {%- if vocabulary_schema is none %}
    select 'none loaded' as vocabulary_version
    {%- else %}
    select coalesce(max(vocabulary_version), 'none loaded') as vocabulary_version
    from {{ api.Relation.create(database=target.database, schema=vocabulary_schema, identifier='vocabulary') }}
    where vocabulary_id = 'None'
    {%- endif %}
)

select
    'Health Data Hub warehouse (SNDS)' as cdm_source_name,
    'HDH-SNDS' as cdm_source_abbreviation,
    'Health Data Hub' as cdm_holder,
    'Pseudonymised extracts of the French national health data system (SNDS: DCIR claims and pharmacy, '
        || 'PMSI MCO stays, beneficiary, drug and ICD-10 referentials) delivered to the hub.' as source_description,
    'https://documentation-snds.health-data-hub.fr' as source_documentation_reference,
    'docs/normalisation.md (hdh-pipelines)' as cdm_etl_reference,
    cast(max(loads.loaded_at) as date) as source_release_date,
    current_date as cdm_release_date,
    '5.4' as cdm_version,
    756265 as cdm_version_concept_id, -- OMOP CDM Version 5.4.0
    any_value(vocabulary.vocabulary_version) as vocabulary_version
from loads
cross join vocabulary
having max(loads.loaded_at) is not null
