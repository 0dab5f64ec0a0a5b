-- PMSI MCO stays (T_MCOaaB with T_MCOaaC) with their dates and the person
-- they belong to. The PMSI carries the pseudonym NIR_ANO_17 (= BEN_NIR_PSA)
-- without the twin rank, so a pseudonym shared by several persons (twins)
-- cannot say whose stay it is: such stays are flagged ambiguous and get no
-- person rather than a guessed one. Partitioned by month of stay start.
{{ config(
    materialized='incremental',
    incremental_strategy='replace_range',
    partition_date_column='stay_start_date',
    full_refresh=not is_partitioned_run(),
    tags=['hdh_partitioned'],
) }}

with stays as (
    select * exclude (hdh_provider, hdh_delivery_id, hdh_dataset, hdh_loaded_at)
    from {{ ref('stg_t_mco_b') }}
),

pseudonym_records as (
    select
        pmsi_year,
        eta_num,
        rsa_num,
        nir_ano_17,
        exe_soi_dtd,
        exe_soi_dtf,
        ent_dat,
        sor_dat,
        -- The chaining return codes: any code other than 0 means the
        -- pseudonym cannot be trusted (the stay itself is fine). A code the
        -- year's format lacks (NULL) does not count against it.
        not (
            coalesce(nir_ret, false) or coalesce(nai_ret, '0') <> '0' or coalesce(sex_ret, false)
            or coalesce(sej_ret, false) or coalesce(fho_ret, false) or coalesce(pms_ret, false)
            or coalesce(dat_ret, '0') <> '0' or coalesce(coh_nai_ret, false) or coalesce(coh_sex_ret, false)
        ) as is_pseudonym_usable
    from {{ ref('stg_t_mco_c') }}
),

dated_stays as (
    select
        stays.*,
        pseudonym_records.nir_ano_17,
        pseudonym_records.is_pseudonym_usable,
        pseudonym_records.rsa_num is not null as has_pseudonym_record,
        coalesce(cast(pseudonym_records.exe_soi_dtd as date), pseudonym_records.ent_dat) as stay_start_date,
        coalesce(cast(pseudonym_records.exe_soi_dtf as date), pseudonym_records.sor_dat) as stay_end_date,
        pseudonym_records.exe_soi_dtd as stay_start_datetime,
        pseudonym_records.exe_soi_dtf as stay_end_datetime
    from stays
    left join pseudonym_records using (pmsi_year, eta_num, rsa_num)
),

stays_in_partition as (
    select * from dated_stays where {{ in_partition('stay_start_date') }}
),

candidate_persons as (
    select
        stays_in_partition.pmsi_year,
        stays_in_partition.eta_num,
        stays_in_partition.rsa_num,
        count(distinct pseudonyms.ben_idt_ano) as candidate_person_count,
        min(pseudonyms.ben_idt_ano) as only_candidate
    from stays_in_partition
    inner join {{ ref('int_pseudonym_persons') }} as pseudonyms
        on pseudonyms.ben_nir_psa = stays_in_partition.nir_ano_17
    group by all
),

linked as (
    select
        stays_in_partition.*,
        coalesce(candidate_persons.candidate_person_count, 0) as candidate_person_count,
        case
            when stays_in_partition.nir_ano_17 is null then 'no_pseudonym'
            when not stays_in_partition.is_pseudonym_usable then 'unusable_pseudonym'
            when candidate_persons.candidate_person_count is null then 'unknown_pseudonym'
            when candidate_persons.candidate_person_count > 1 then 'ambiguous'
            else 'linked'
        end as person_link_status,
        candidate_persons.only_candidate
    from stays_in_partition
    left join candidate_persons using (pmsi_year, eta_num, rsa_num)
)

select
    * exclude (only_candidate),
    case when person_link_status = 'linked' then only_candidate end as ben_idt_ano,
    person_link_status = 'ambiguous' as is_person_ambiguous,
    -- GENRSA puts stays it could not group in GHM 90…: kept, flagged.
    starts_with(grg_ghm, '90') as is_error_stay
from linked
