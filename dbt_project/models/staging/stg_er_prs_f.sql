-- DCIR claims (ER_PRS_F), typed: one row per claim key (the 9 DCIR join
-- columns), the latest delivered version of each. Partitioned by month of
-- FLX_DIS_DTD, which is part of the key, so every version of a claim falls in
-- the same partition.
{{ config(
    materialized='incremental',
    full_refresh=not is_partitioned_run(),
    tags=['hdh_partitioned'],
    **monthly_partitions('flx_dis_dtd')
) }}

with delivered as (
    select * from {{ raw_rows('er_prs_f') }}
),

typed as (
    select
        {{ dcir_claim_key() }},
        {{ as_string('BEN_NIR_PSA') }} as ben_nir_psa,
        {{ as_integer('BEN_RNG_GEM') }} as ben_rng_gem,
        {{ as_integer('BEN_SEX_COD') }} as ben_sex_cod,
        {{ as_year('BEN_NAI_ANN') }} as ben_nai_ann,
        {{ as_string('BEN_RES_DPT') }} as ben_res_dpt,
        {{ as_string('BEN_RES_COM') }} as ben_res_com,
        {{ as_date('EXE_SOI_DTD') }} as exe_soi_dtd,
        {{ as_date('EXE_SOI_DTF') }} as exe_soi_dtf,
        {{ as_integer('PRS_NAT_REF') }} as prs_nat_ref,
        {{ as_integer('BSE_PRS_NAT') }} as bse_prs_nat,
        {{ as_number('PRS_ACT_QTE') }} as prs_act_qte,
        {{ as_number('PRS_PAI_MNT') }} as prs_pai_mnt,
        {{ as_number('BSE_REM_BSE') }} as bse_rem_bse,
        {{ as_number('BSE_REM_MNT') }} as bse_rem_mnt,
        {{ as_integer('DPN_QLF') }} as dpn_qlf,
        {{ as_integer('CPL_MAJ_TOP') }} as cpl_maj_top,
        {{ as_integer('PSE_SPE_COD') }} as pse_spe_cod,
        {{ delivery_lineage() }}
    from delivered
)

select {{ columns_except(['hdh_source_file', 'file_row_number']) }}
from typed
where {{ in_partition('flx_dis_dtd') }}
{{ latest_dcir_claim_delivery(one_row_per_claim=true) }}
