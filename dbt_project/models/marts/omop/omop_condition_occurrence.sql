-- OMOP CDM 5.4 CONDITION_OCCURRENCE: one condition per ICD-10 diagnosis (DP,
-- DR, DAS) of each stay that is a visit, and one per code its medical units
-- add (DP_UM, DR_UM). The ICD-10 code is the source value; its concepts come
-- from int_omop_concept_map, 0 until the OHDSI vocabularies are loaded
-- (docs/normalisation.md). The stay's principal diagnosis has status
-- "primary", the others "secondary": a unit's DP is the principal diagnosis
-- of that unit, not of the visit (this subset has no VISIT_DETAIL).
with stay_diagnoses as (
    select
        *,
        -- The stay's visit, identified as in omop_visit_occurrence.
        {{ surrogate_id(['pmsi_year', 'eta_num', 'rsa_num']) }} as visit_occurrence_id
    from {{ ref('hospital_stay_diagnoses') }}
),

-- A unit diagnosis the stay already holds (its DP is one of its units' DP, and
-- so is every mono-unit stay's) would repeat a condition of the visit: it
-- adds a condition only for a code the stay does not hold, once per code (the
-- first unit's, a DP before a DR).
unit_diagnoses as (
    select
        units.*,
        row_number() over (
            partition by units.visit_occurrence_id, units.icd10_code
            order by units.diagnosis_type, units.diagnosis_rank
        ) as code_order
    from stay_diagnoses as units
    left join stay_diagnoses as own
        on own.visit_occurrence_id = units.visit_occurrence_id
        and own.icd10_code = units.icd10_code
        and own.diagnosis_type in ('DP', 'DR', 'DAS')
    where units.diagnosis_type in ('DP_UM', 'DR_UM')
        and own.icd10_code is null
),

diagnoses as (
    select pmsi_year, eta_num, rsa_num, diagnosis_type, diagnosis_rank, icd10_code, visit_occurrence_id
    from stay_diagnoses
    where diagnosis_type in ('DP', 'DR', 'DAS')
    union all
    select pmsi_year, eta_num, rsa_num, diagnosis_type, diagnosis_rank, icd10_code, visit_occurrence_id
    from unit_diagnoses
    where code_order = 1
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
