-- OMOP CDM 5.4 PERSON: one row per person of the persons mart (opt-outs are
-- already out) whose birth year is known, the CDM requiring it. Gender uses
-- the two standard Gender concepts; race and ethnicity are not collected in
-- the SNDS (0).
with persons as (
    select * from {{ ref('persons') }}
    where birth_year is not null
)

select
    {{ surrogate_id(['ben_idt_ano']) }} as person_id,
    case sex_code
        when 1 then 8507 -- MALE
        when 2 then 8532 -- FEMALE
        else 0
    end as gender_concept_id,
    birth_year as year_of_birth,
    birth_month as month_of_birth,
    cast(null as integer) as day_of_birth,
    cast(null as timestamp) as birth_datetime,
    0 as race_concept_id,
    0 as ethnicity_concept_id,
    cast(null as bigint) as location_id,
    cast(null as bigint) as provider_id,
    cast(null as bigint) as care_site_id,
    ben_idt_ano as person_source_value,
    cast(sex_code as {{ dbt.type_string() }}) as gender_source_value,
    0 as gender_source_concept_id,
    cast(null as {{ dbt.type_string() }}) as race_source_value,
    0 as race_source_concept_id,
    cast(null as {{ dbt.type_string() }}) as ethnicity_source_value,
    0 as ethnicity_source_concept_id
from persons
