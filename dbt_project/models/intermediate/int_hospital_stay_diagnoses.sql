-- Every diagnosis of every PMSI MCO stay, one row each: the principal (DP)
-- and related (DR) diagnoses of T_MCOaaB, and the associated ones (DAS) of
-- T_MCOaaD. Partitioned like the stays, by month of stay start.
{{ config(
    materialized='incremental',
    full_refresh=not is_partitioned_run(),
    tags=['hdh_partitioned'],
    **monthly_partitions('stay_start_date')
) }}

with stays as (
    select pmsi_year, eta_num, rsa_num, stay_start_date, dgn_pal, dgn_rel
    from {{ ref('int_hospital_stays') }}
    where {{ in_partition('stay_start_date') }}
),

principal_diagnoses as (
    select pmsi_year, eta_num, rsa_num, stay_start_date, 'DP' as diagnosis_type, 1 as diagnosis_rank,
           dgn_pal as icd10_code
    from stays
    where dgn_pal is not null
),

related_diagnoses as (
    select pmsi_year, eta_num, rsa_num, stay_start_date, 'DR' as diagnosis_type, 1 as diagnosis_rank,
           dgn_rel as icd10_code
    from stays
    where dgn_rel is not null
),

associated_diagnoses as (
    select stays.pmsi_year, stays.eta_num, stays.rsa_num, stays.stay_start_date, 'DAS' as diagnosis_type,
           associated.dgn_ass_num as diagnosis_rank, associated.ass_dgn as icd10_code
    from stays
    inner join {{ ref('stg_t_mco_d') }} as associated using (pmsi_year, eta_num, rsa_num)
    where associated.ass_dgn is not null
)

select * from principal_diagnoses
union all
select * from related_diagnoses
union all
select * from associated_diagnoses
