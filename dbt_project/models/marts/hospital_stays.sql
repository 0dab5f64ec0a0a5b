-- Analysis-ready PMSI MCO stays: one row per stay the SNDS rules retain
-- (int_hospital_stays: no duplicate FINESS, no inter-hospital duplicate, no
-- error GHM) with its dates, GHM and its status (a missing GHM is kept and
-- says so), principal and related diagnoses and, when the pseudonym names exactly one
-- person, that person. Stays of persons who opted out are left out, and so is
-- any stay whose pseudonym an opted-out person shares (twins): without the
-- twin rank it could be theirs.
{{ config(
    materialized='incremental',
    full_refresh=not is_partitioned_run(),
    post_hook=["{{ purge_opted_out('nir_ano_17') }}"],
    tags=['hdh_partitioned'],
    **monthly_partitions('stay_start_date')
) }}

with stays as (
    select *
    from {{ ref('int_hospital_stays') }}
    where {{ in_partition('stay_start_date') }}
)

select
    pmsi_year,
    eta_num,
    rsa_num,
    ben_idt_ano,
    nir_ano_17,
    person_link_status,
    is_person_ambiguous,
    candidate_person_count,
    stay_start_date,
    stay_end_date,
    stay_start_datetime,
    stay_end_datetime,
    sej_nbj as length_of_stay_days,
    cod_sex as sex_code,
    age_ann as age_years,
    age_jou as age_days,
    bdi_dep as residence_departement,
    bdi_cod as residence_code,
    dgn_pal as principal_diagnosis,
    dgn_rel as related_diagnosis,
    nbr_dgn as associated_diagnosis_count,
    grg_ghm as ghm_code,
    ghm_status,
    is_session_stay,
    sej_typ as stay_type,
    ghs_num as ghs_number,
    ent_mod as admission_mode,
    ent_prv as admission_origin,
    sor_mod as discharge_mode,
    sor_des as discharge_destination,
    nbr_act as procedure_count,
    nbr_sea as session_count,
    is_error_stay
from stays
where not {{ is_opted_out('stays.nir_ano_17') }}
