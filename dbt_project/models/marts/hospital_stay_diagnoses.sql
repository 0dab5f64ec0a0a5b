-- Analysis-ready hospital diagnoses: one row per diagnosis (DP, DR, DAS of
-- the stay, DP_UM and DR_UM of its medical units) of each stay of the
-- hospital_stays mart, with the stay's person and start
-- date, and the code's label from the delivered ICD-10 nomenclature
-- (IR_CIM_V). The same opt-out rule as the stays applies.
{{ config(
    materialized='incremental',
    full_refresh=not is_partitioned_run(),
    post_hook=["{{ purge_opted_out('nir_ano_17') }}"],
    tags=['hdh_partitioned'],
    **monthly_partitions('stay_start_date')
) }}

with diagnoses as (
    select *
    from {{ ref('int_hospital_stay_diagnoses') }}
    where {{ in_partition('stay_start_date') }}
),

stays as (
    select pmsi_year, eta_num, rsa_num, ben_idt_ano, nir_ano_17, person_link_status
    from {{ ref('int_hospital_stays') }}
    where {{ in_partition('stay_start_date') }}
),

icd10_labels as (
    select cim_cod, cim_lib
    from {{ ref('stg_ir_cim_v') }}
)

select
    diagnoses.pmsi_year,
    diagnoses.eta_num,
    diagnoses.rsa_num,
    diagnoses.diagnosis_type,
    diagnoses.diagnosis_rank,
    diagnoses.icd10_code,
    icd10_labels.cim_lib as icd10_label,
    diagnoses.stay_start_date,
    stays.ben_idt_ano,
    stays.nir_ano_17,
    stays.person_link_status
from diagnoses
inner join stays using (pmsi_year, eta_num, rsa_num)
left join icd10_labels on icd10_labels.cim_cod = diagnoses.icd10_code
where not {{ is_opted_out('stays.nir_ano_17') }}
