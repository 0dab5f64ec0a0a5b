-- Each pharmacy line (ER_PHA_F) with its claim (ER_PRS_F), joined on the 9
-- DCIR key columns, and the drug's ATC class (drug referential IR_PHA_R). A line
-- whose claim was not delivered is kept with has_claim false: the key
-- relationship test reports it.
{{ config(
    materialized='incremental',
    full_refresh=not is_partitioned_run(),
    tags=['hdh_partitioned'],
    **monthly_partitions('flx_dis_dtd')
) }}

with pharmacy_lines as (
    select {{ columns_except(['hdh_provider', 'hdh_delivery_id', 'hdh_dataset', 'hdh_loaded_at']) }}
    from {{ ref('stg_er_pha_f') }}
    where {{ in_partition('flx_dis_dtd') }}
),

claims as (
    select *
    from {{ ref('int_claims') }}
    where {{ in_partition('flx_dis_dtd') }}
),

atc_classes as (
    select cip13, atc_code
    from {{ ref('int_drug_presentations') }}
)

select
    pharmacy_lines.*,
    claims.dct_ord_num is not null as has_claim,
    claims.ben_nir_psa,
    claims.ben_rng_gem,
    claims.ben_idt_ano,
    claims.exe_soi_dtd,
    claims.prs_nat_ref,
    claims.dpn_qlf,
    claims.pse_spe_cod,
    claims.line_status,
    atc_classes.atc_code
from pharmacy_lines
left join claims using ({{ dcir_claim_key_columns() | join(', ') }})
left join atc_classes on atc_classes.cip13 = pharmacy_lines.pha_prs_c13
