-- Analysis-ready DCIR claims: one row per claim with its person, except the
-- claims of persons who opted out. Lines for information only (DPN_QLF = 71)
-- are kept and flagged: counting consumption must keep line_status = 'countable'
-- only (macro dcir_line_status).
{{ config(
    materialized='incremental',
    full_refresh=not is_partitioned_run(),
    post_hook=["{{ purge_opted_out('ben_nir_psa', 'ben_rng_gem') }}"],
    tags=['hdh_partitioned'],
    **monthly_partitions('flx_dis_dtd')
) }}

with claims as (
    select *
    from {{ ref('int_claims') }}
    where {{ in_partition('flx_dis_dtd') }}
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
    ben_idt_ano,
    ben_nir_psa,
    ben_rng_gem,
    exe_soi_dtd as care_start_date,
    exe_soi_dtf as care_end_date,
    prs_nat_ref as benefit_nature_code,
    pse_spe_cod as practitioner_specialty_code,
    prs_act_qte as quantity,
    prs_pai_mnt as amount_paid,
    bse_rem_bse as reimbursement_base,
    bse_rem_mnt as amount_reimbursed,
    dpn_qlf as expense_qualifier,
    coalesce(dpn_qlf = 71, false) as is_for_information_only,
    line_status
from claims
where not {{ is_opted_out('claims.ben_nir_psa', 'claims.ben_rng_gem') }}
