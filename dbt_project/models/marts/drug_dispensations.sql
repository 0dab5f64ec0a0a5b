-- Analysis-ready drug dispensations: one row per pharmacy line with its
-- claim, person, CIP13 code and ATC class, except those of persons who opted
-- out. Lines whose claim is missing are left out: without the claim there is
-- no person, date or opt-out to check.
{{ config(
    materialized='incremental',
    incremental_strategy='replace_range',
    partition_date_column='flx_dis_dtd',
    full_refresh=not is_partitioned_run(),
    post_hook=["{{ purge_opted_out('ben_nir_psa', 'ben_rng_gem') }}"],
    tags=['hdh_partitioned'],
) }}

with pharmacy_lines as (
    select *
    from {{ ref('int_claim_pharmacy_lines') }}
    where {{ in_partition('flx_dis_dtd') }}
        and has_claim
)

select
    dct_ord_num,
    flx_dis_dtd,
    flx_emt_num,
    flx_emt_ord,
    flx_emt_typ,
    flx_trt_dtd,
    org_cle_num,
    prs_ord_num,
    rem_typ_aff,
    pha_ord_num,
    ben_idt_ano,
    ben_nir_psa,
    ben_rng_gem,
    exe_soi_dtd as dispensing_date,
    lpad(cast(pha_prs_c13 as varchar), 13, '0') as cip13,
    atc_code,
    pha_act_qsn as boxes,
    pha_act_pru as unit_price,
    prs_nat_ref as benefit_nature_code,
    coalesce(dpn_qlf = 71, false) as is_for_information_only
from pharmacy_lines
where not {{ is_opted_out('pharmacy_lines.ben_nir_psa', 'pharmacy_lines.ben_rng_gem') }}
