-- DCIR pharmacy detail (ER_PHA_F), typed: the drug lines of each claim, taken
-- from the latest delivery that holds lines for that claim, so a re-delivered
-- claim with fewer lines does not keep the old extra ones. Partitioned like
-- its claims, by month of FLX_DIS_DTD (part of the claim key).
{{ config(
    materialized='incremental',
    full_refresh=not is_partitioned_run(),
    tags=['hdh_partitioned'],
    **monthly_partitions('flx_dis_dtd')
) }}

with delivered as (
    select * from {{ raw_rows('er_pha_f') }}
),

typed as (
    select
        {{ dcir_claim_key() }},
        {{ as_integer('PHA_PRS_C13') }} as pha_prs_c13,
        {{ as_integer('PHA_ACT_QSN') }} as pha_act_qsn,
        {{ as_number('PHA_ACT_PRU') }} as pha_act_pru,
        {{ as_integer('PHA_ORD_NUM') }} as pha_ord_num,
        {{ as_integer('PHA_SEQ_RNV') }} as pha_seq_rnv,
        {{ as_integer('PHA_SUB_MTF') }} as pha_sub_mtf,
        {{ delivery_columns() }}
    from delivered
)

select *
from typed
where {{ in_partition('flx_dis_dtd') }}
{{ latest_dcir_claim_delivery(one_row_per_claim=false) }}
