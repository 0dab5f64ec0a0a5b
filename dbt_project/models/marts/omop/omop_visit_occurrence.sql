-- OMOP CDM 5.4 VISIT_OCCURRENCE: one visit per PMSI MCO stay linked to one
-- person of the OMOP person table (ambiguous, unlinked and error stays stay
-- out). A stay ending the day it starts is an outpatient visit, any other an
-- inpatient one (OMOP Visit conventions).
with stays as (
    select *
    from {{ ref('hospital_stays') }}
    where person_link_status = 'linked'
        and not is_error_stay
        and stay_start_date is not null
)

select
    {{ surrogate_id(['stays.pmsi_year', 'stays.eta_num', 'stays.rsa_num']) }} as visit_occurrence_id,
    omop_person.person_id,
    case
        when coalesce(stays.stay_end_date, stays.stay_start_date) > stays.stay_start_date
            then 9201 -- Inpatient Visit
        else 9202 -- Outpatient Visit
    end as visit_concept_id,
    stays.stay_start_date as visit_start_date,
    stays.stay_start_datetime as visit_start_datetime,
    coalesce(stays.stay_end_date, stays.stay_start_date) as visit_end_date,
    stays.stay_end_datetime as visit_end_datetime,
    32810 as visit_type_concept_id, -- Claim
    cast(null as bigint) as provider_id,
    cast(null as bigint) as care_site_id,
    'MCO' as visit_source_value,
    0 as visit_source_concept_id,
    0 as admitted_from_concept_id,
    stays.admission_mode as admitted_from_source_value,
    0 as discharged_to_concept_id,
    stays.discharge_mode as discharged_to_source_value,
    cast(null as bigint) as preceding_visit_occurrence_id
from stays
inner join {{ ref('omop_person') }} as omop_person
    on omop_person.person_source_value = stays.ben_idt_ano
