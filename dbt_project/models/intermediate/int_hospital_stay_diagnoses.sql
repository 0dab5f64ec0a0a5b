-- Every diagnosis of every PMSI MCO stay, one row each: the principal (DP)
-- and related (DR) diagnoses of T_MCOaaB, the associated ones (DAS) of
-- T_MCOaaD, and the principal and related diagnoses of each medical unit
-- (DP_UM, DR_UM) of T_MCOaaUM. Only the stays int_hospital_stays retains: a
-- unit or DAS row of a stay the SNDS rules leave out, or of a fictitious RSA,
-- matches no stay. A unit diagnosis is kept even when the stay repeats it
-- (the stay's DP is one of its units' DP, Documentation-SNDS glossaire RSS):
-- which positions count is each reader's rule (the coronary algorithm reads
-- the DP of any unit, OMOP keeps one condition per code). Partitioned like
-- the stays, by month of stay start.
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
),

units as (
    select stays.pmsi_year, stays.eta_num, stays.rsa_num, stays.stay_start_date, units.um_ord_num,
           units.dgn_pal, units.dgn_rel
    from stays
    inner join {{ ref('stg_t_mco_um') }} as units using (pmsi_year, eta_num, rsa_num)
),

unit_principal_diagnoses as (
    select pmsi_year, eta_num, rsa_num, stay_start_date, 'DP_UM' as diagnosis_type, um_ord_num as diagnosis_rank,
           dgn_pal as icd10_code
    from units
    where dgn_pal is not null
),

unit_related_diagnoses as (
    select pmsi_year, eta_num, rsa_num, stay_start_date, 'DR_UM' as diagnosis_type, um_ord_num as diagnosis_rank,
           dgn_rel as icd10_code
    from units
    where dgn_rel is not null
)

select * from principal_diagnoses
union all
select * from related_diagnoses
union all
select * from associated_diagnoses
union all
select * from unit_principal_diagnoses
union all
select * from unit_related_diagnoses
