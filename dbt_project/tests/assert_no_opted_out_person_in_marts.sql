-- No row of any mart or OMOP table belongs to a person who opted out, or to a
-- pseudonym an opted-out person holds (the PMSI's NIR_ANO_17 has no twin rank).
-- It reads the marts and the OMOP tables, which Dagster builds in different
-- steps: tag hdh_cross_layer keeps it for the last one.
{{ config(tags=['hdh_cross_layer']) }}

-- Tagged hdh_cross_layer: it reads marts built by different Dagster steps, so
-- only the last step (hdh_pipelines/normalisation/assets.py) runs it.
{{ config(tags=['hdh_cross_layer']) }}

with opted_out as (
    select * from {{ ref('int_opt_out_exclusions') }}
),

omop_opted_out_persons as (
    select omop_person.person_id
    from {{ ref('omop_person') }} as omop_person
    inner join opted_out on opted_out.ben_idt_ano = omop_person.person_source_value
),

violations as (
    select 'persons' as relation, count(*) as offending_rows
    from {{ ref('persons') }} inner join opted_out using (ben_idt_ano)
    union all
    select 'claims', count(*)
    from {{ ref('claims') }} inner join opted_out using (ben_nir_psa, ben_rng_gem)
    union all
    select 'drug_dispensations', count(*)
    from {{ ref('drug_dispensations') }} inner join opted_out using (ben_nir_psa, ben_rng_gem)
    union all
    select 'long_term_illnesses', count(*)
    from {{ ref('long_term_illnesses') }} inner join opted_out using (ben_nir_psa, ben_rng_gem)
    union all
    select 'hospital_stays', count(*)
    from {{ ref('hospital_stays') }} as stays
    where stays.nir_ano_17 in (select ben_nir_psa from opted_out)
    union all
    select 'hospital_stay_diagnoses', count(*)
    from {{ ref('hospital_stay_diagnoses') }} as diagnoses
    where diagnoses.nir_ano_17 in (select ben_nir_psa from opted_out)
    union all
    select 'omop_person', count(*) from omop_opted_out_persons
    {%- for omop_table in ['omop_observation_period', 'omop_visit_occurrence', 'omop_condition_occurrence',
                           'omop_drug_exposure', 'omop_procedure_occurrence', 'omop_death'] %}
    union all
    select '{{ omop_table }}', count(*)
    from {{ ref(omop_table) }}
    where person_id in (select person_id from omop_opted_out_persons)
    {%- endfor %}
)

select * from violations where offending_rows > 0
