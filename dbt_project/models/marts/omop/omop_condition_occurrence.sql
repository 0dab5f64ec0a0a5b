-- OMOP CDM 5.4 CONDITION_OCCURRENCE: one condition per ICD-10 diagnosis (DP,
-- DR, DAS) of each stay that is a visit. The ICD-10 code is the source value;
-- its concepts come from int_omop_concept_map, 0 until the OHDSI vocabularies
-- are loaded (docs/normalisation.md). The principal diagnosis has status "primary", the
-- others "secondary".
with diagnoses as (
    select
        *,
        -- The stay's visit, identified as in omop_visit_occurrence.
        {{ surrogate_id(['pmsi_year', 'eta_num', 'rsa_num']) }} as visit_occurrence_id
    from {{ ref('hospital_stay_diagnoses') }}
),

visits as (
    select * from {{ ref('omop_visit_occurrence') }}
),

icd10_concepts as (
    select source_code, source_concept_id, standard_concept_id
    from {{ ref('int_omop_concept_map') }}
    where code_system = 'icd10'
)

select
    {{ surrogate_id([
        'diagnoses.pmsi_year', 'diagnoses.eta_num', 'diagnoses.rsa_num',
        'diagnoses.diagnosis_type', 'diagnoses.diagnosis_rank',
    ]) }} as condition_occurrence_id,
    visits.person_id,
    coalesce(icd10_concepts.standard_concept_id, 0) as condition_concept_id,
    visits.visit_start_date as condition_start_date,
    visits.visit_start_datetime as condition_start_datetime,
    visits.visit_end_date as condition_end_date,
    visits.visit_end_datetime as condition_end_datetime,
    32810 as condition_type_concept_id, -- Claim
    case diagnoses.diagnosis_type
        when 'DP' then 32902 -- Primary diagnosis
        else 32908 -- Secondary diagnosis
    end as condition_status_concept_id,
    cast(null as {{ dbt.type_string() }}) as stop_reason,
    cast(null as bigint) as provider_id,
    visits.visit_occurrence_id,
    cast(null as bigint) as visit_detail_id,
    diagnoses.icd10_code as condition_source_value,
    coalesce(icd10_concepts.source_concept_id, 0) as condition_source_concept_id,
    diagnoses.diagnosis_type as condition_status_source_value
from diagnoses
inner join visits using (visit_occurrence_id)
left join icd10_concepts on icd10_concepts.source_code = diagnoses.icd10_code
