-- DCIR establishment detail (ER_ETE_F), typed: for a claim executed in an
-- establishment, its one establishment row (a claim without one is private
-- practice), the latest delivered version. ETE_IND_TAA marks the activity of
-- public hospitals billing directly (FIDES), which dcir_line_status does not
-- count as care. Partitioned like its claims, by month of FLX_DIS_DTD (part of
-- the claim key).
{{ config(
    materialized='incremental',
    full_refresh=not is_partitioned_run(),
    tags=['hdh_partitioned'],
    **monthly_partitions('flx_dis_dtd')
) }}

with delivered as (
    select * from {{ raw_rows('er_ete_f') }}
),

typed as (
    select
        {{ dcir_claim_key() }},
        {{ as_integer('ETE_IND_TAA') }} as ete_ind_taa,
        {{ delivery_lineage() }}
    from delivered
)

select {{ columns_except(['hdh_source_file', 'file_row_number']) }}
from typed
where {{ in_partition('flx_dis_dtd') }}
{{ latest_dcir_claim_delivery(one_row_per_claim=true) }}
