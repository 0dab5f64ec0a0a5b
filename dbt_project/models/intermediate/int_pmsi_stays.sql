-- Every PMSI MCO stay delivered (T_MCOaaB with T_MCOaaC), with its dates, the
-- person it belongs to and the status the SNDS rules give it
-- (macros/pmsi_rules.sql); int_hospital_stays keeps the retained ones, month
-- by month. Rebuilt whole: the persons' deaths at discharge read it too.
--
-- The PMSI carries the pseudonym NIR_ANO_17 (= BEN_NIR_PSA) without the twin
-- rank, so a pseudonym shared by several persons (twins) cannot say whose stay
-- it is: such stays are flagged ambiguous and get no person rather than a
-- guessed one.

with stays as (
    select {{ columns_except(['hdh_provider', 'hdh_delivery_id', 'hdh_dataset', 'hdh_loaded_at']) }}
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
        {{ pmsi_chaining_status('pmsi_year') }} as chaining_status
    from {{ ref('stg_t_mco_c') }}
),

-- The geographic FINESS of AP-HP, AP-HM and HCL whose stays also arrive under
-- the legal FINESS, for the years they did (referential FINESS_PMSI_DOUBLONS).
duplicate_finess as (
    select eta_num, first_year, last_year
    from {{ ref('stg_finess_pmsi_doublons') }}
),

dated_stays as (
    select
        stays.*,
        pseudonym_records.nir_ano_17,
        coalesce(pseudonym_records.chaining_status, 'no_pseudonym') as chaining_status,
        pseudonym_records.rsa_num is not null as has_pseudonym_record,
        coalesce(cast(pseudonym_records.exe_soi_dtd as date), pseudonym_records.ent_dat) as stay_start_date,
        coalesce(cast(pseudonym_records.exe_soi_dtf as date), pseudonym_records.sor_dat) as stay_end_date,
        pseudonym_records.exe_soi_dtd as stay_start_datetime,
        pseudonym_records.exe_soi_dtf as stay_end_datetime,
        {{ ghm_status('stays.grg_ghm') }} as ghm_status,
        {{ is_session_ghm('stays.grg_ghm') }} as is_session_stay,
        exists (
            select 1
            from duplicate_finess
            where duplicate_finess.eta_num = stays.eta_num
                and stays.pmsi_year >= duplicate_finess.first_year
                and (duplicate_finess.last_year is null or stays.pmsi_year <= duplicate_finess.last_year)
        ) as is_duplicate_finess,
        {{ is_inter_hospital_duplicate('stays.sej_typ', 'stays.grg_ghm') }} as is_inter_hospital_duplicate
    from stays
    left join pseudonym_records using (pmsi_year, eta_num, rsa_num)
),

candidate_persons as (
    select
        dated_stays.pmsi_year,
        dated_stays.eta_num,
        dated_stays.rsa_num,
        count(distinct pseudonyms.ben_idt_ano) as candidate_person_count,
        min(pseudonyms.ben_idt_ano) as only_candidate
    from dated_stays
    inner join {{ ref('int_pseudonym_persons') }} as pseudonyms
        on pseudonyms.ben_nir_psa = dated_stays.nir_ano_17
    group by all
),

linked as (
    select
        dated_stays.*,
        coalesce(candidate_persons.candidate_person_count, 0) as candidate_person_count,
        case
            when dated_stays.chaining_status = 'no_pseudonym' then 'no_pseudonym'
            when dated_stays.chaining_status <> 'valid' then 'unusable_pseudonym'
            when candidate_persons.candidate_person_count is null then 'unknown_pseudonym'
            when candidate_persons.candidate_person_count > 1 then 'ambiguous'
            else 'linked'
        end as person_link_status,
        candidate_persons.only_candidate
    from dated_stays
    left join candidate_persons using (pmsi_year, eta_num, rsa_num)
)

select
    {{ columns_except(['only_candidate']) }},
    case when person_link_status = 'linked' then only_candidate end as ben_idt_ano,
    person_link_status = 'ambiguous' as is_person_ambiguous,
    ghm_status = 'error' as is_error_stay,
    -- Why a stay is left out of the stays counted (int_hospital_stays), the
    -- first rule that applies; retained otherwise.
    case
        when is_duplicate_finess then 'duplicate_finess'
        when is_inter_hospital_duplicate then 'inter_hospital_duplicate'
        when ghm_status = 'error' then 'error_ghm'
        when {{ is_generated_rsa('typ_gen_rsa') }} then 'generated_rsa'
        when {{ is_non_reimbursed_ghs('ghs_num') }} then 'non_reimbursed_ghs'
        else 'retained'
    end as stay_status
from linked
