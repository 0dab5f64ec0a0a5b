-- DCIR claims with the person they belong to, found through their pseudonym
-- and twin rank (NULL when the referential does not hold the pair), and whether
-- the line is care to count (dcir_line_status: information only, no base act…).
{{ config(
    materialized='incremental',
    full_refresh=not is_partitioned_run(),
    tags=['hdh_partitioned'],
    **monthly_partitions('flx_dis_dtd')
) }}

with claims as (
    select {{ columns_except(['hdh_provider', 'hdh_delivery_id', 'hdh_dataset', 'hdh_loaded_at']) }}
    from {{ ref('stg_er_prs_f') }}
    where {{ in_partition('flx_dis_dtd') }}
),

pseudonyms as (
    select ben_nir_psa, ben_rng_gem, ben_idt_ano
    from {{ ref('int_pseudonym_persons') }}
)

select
    claims.*,
    pseudonyms.ben_idt_ano,
    {{ dcir_line_status('claims.dpn_qlf', 'claims.bse_prs_nat', 'claims.cpl_maj_top') }} as line_status
from claims
left join pseudonyms using (ben_nir_psa, ben_rng_gem)
