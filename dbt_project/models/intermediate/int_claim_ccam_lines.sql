-- Each CCAM act line (ER_CAM_F) with its claim (ER_PRS_F), joined on the 9
-- DCIR key columns: the person, the day of care, the signed quantity of the
-- claim line (ER_CAM_F has none of its own) and whether the line is care to
-- count (dcir_line_status). A line whose claim was not delivered is kept with
-- has_claim false: the key relationship test reports it.
{{ config(
    materialized='incremental',
    full_refresh=not is_partitioned_run(),
    tags=['hdh_partitioned'],
    **monthly_partitions('flx_dis_dtd')
) }}

with ccam_lines as (
    select {{ columns_except(['hdh_provider', 'hdh_delivery_id', 'hdh_dataset', 'hdh_loaded_at']) }}
    from {{ ref('stg_er_cam_f') }}
    where {{ in_partition('flx_dis_dtd') }}
),

claims as (
    select *
    from {{ ref('int_claims') }}
    where {{ in_partition('flx_dis_dtd') }}
)

select
    ccam_lines.*,
    claims.dct_ord_num is not null as has_claim,
    claims.ben_nir_psa,
    claims.ben_rng_gem,
    claims.ben_idt_ano,
    claims.exe_soi_dtd,
    claims.prs_nat_ref,
    claims.prs_act_qte,
    claims.dpn_qlf,
    claims.pse_spe_cod,
    claims.line_status
from ccam_lines
left join claims using ({{ dcir_claim_key_columns() | join(', ') }})
