-- DCIR claims with the person they belong to, found through their pseudonym
-- and twin rank (NULL when the referential does not hold the pair), the T2A
-- indicator of their establishment line (ER_ETE_F, joined on the 9 DCIR key
-- columns; NULL for a claim without one, private practice), and whether the
-- line is care to count (dcir_line_status: information only, public hospital
-- billing directly, no base act…).
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

-- One row per claim key (stg_er_ete_f), so the join keeps one row per claim.
establishments as (
    select {{ dcir_claim_key_columns() | join(', ') }}, ete_ind_taa
    from {{ ref('stg_er_ete_f') }}
    where {{ in_partition('flx_dis_dtd') }}
),

pseudonyms as (
    select ben_nir_psa, ben_rng_gem, ben_idt_ano
    from {{ ref('int_pseudonym_persons') }}
)

select
    claims.*,
    pseudonyms.ben_idt_ano,
    establishments.ete_ind_taa,
    {{ dcir_line_status(
        'claims.dpn_qlf', 'claims.bse_prs_nat', 'claims.cpl_maj_top', 'establishments.ete_ind_taa'
    ) }} as line_status
from claims
left join establishments using ({{ dcir_claim_key_columns() | join(', ') }})
left join pseudonyms using (ben_nir_psa, ben_rng_gem)
