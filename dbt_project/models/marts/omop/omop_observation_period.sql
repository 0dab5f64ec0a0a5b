-- OMOP CDM 5.4 OBSERVATION_PERIOD: one period per person, from the first to
-- the last care event the marts hold for them (claims, dispensations, hospital
-- stays), ended at death when death comes first. The SNDS covers everyone
-- insured, but enrolment periods are not delivered, so the events bound the
-- period.
with care_events as (
    select ben_idt_ano, care_start_date as event_start, coalesce(care_end_date, care_start_date) as event_end
    from {{ ref('claims') }}
    where not is_for_information_only
    union all
    select ben_idt_ano, dispensing_date, dispensing_date
    from {{ ref('drug_dispensations') }}
    where not is_for_information_only
    union all
    select ben_idt_ano, stay_start_date, coalesce(stay_end_date, stay_start_date)
    from {{ ref('hospital_stays') }}
    where person_link_status = 'linked'
),

event_bounds as (
    select ben_idt_ano, min(event_start) as first_event, max(event_end) as last_event
    from care_events
    where ben_idt_ano is not null and event_start is not null
    group by ben_idt_ano
),

bounded as (
    select
        omop_person.person_id,
        least(event_bounds.last_event, coalesce(persons.death_date, event_bounds.last_event)) as period_end,
        event_bounds.first_event
    from event_bounds
    inner join {{ ref('persons') }} as persons using (ben_idt_ano)
    inner join {{ ref('omop_person') }} as omop_person
        on omop_person.person_source_value = event_bounds.ben_idt_ano
)

select
    -- One period per person: the person's id identifies it.
    person_id as observation_period_id,
    person_id,
    least(first_event, period_end) as observation_period_start_date,
    period_end as observation_period_end_date,
    32810 as period_type_concept_id -- Claim
from bounded
