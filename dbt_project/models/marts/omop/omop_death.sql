-- OMOP CDM 5.4 DEATH: one row per person of the OMOP person table known to
-- have died. The persons mart keeps both sources side by side: the
-- beneficiary referential (IR_BEN_R.BEN_DCD_DTE under any of the person's
-- pseudonyms, referential_death_date) and the PMSI, a stay whose discharge
-- mode is death (T_MCOaaB.SOR_MOD = 9, nomenclature MS_SOR_V, the rule
-- SCALPEL-Extraction applies; hospital_death_date, int_hospital_deaths).
-- The earliest date wins; on a tie the referential does, and its date's
-- source gives the death type.
with deaths as (
    select ben_idt_ano, referential_death_date as death_date, 32879 as death_type_concept_id, 1 as source_rank
    from {{ ref('persons') }} -- 32879: Registry
    where referential_death_date is not null
    union all
    select ben_idt_ano, hospital_death_date, 32810, 2 -- Claim
    from {{ ref('persons') }}
    where hospital_death_date is not null
)

select
    omop_person.person_id,
    deaths.death_date,
    cast(deaths.death_date as timestamp) as death_datetime,
    deaths.death_type_concept_id,
    0 as cause_concept_id,
    cast(null as {{ dbt.type_string() }}) as cause_source_value,
    0 as cause_source_concept_id
from deaths
inner join {{ ref('omop_person') }} as omop_person
    on omop_person.person_source_value = deaths.ben_idt_ano
qualify row_number() over (
    partition by omop_person.person_id
    order by deaths.death_date, deaths.source_rank
) = 1
