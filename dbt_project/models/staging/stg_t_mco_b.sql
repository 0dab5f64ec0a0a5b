-- PMSI MCO stays (T_MCOaaB), typed: one row per stay (PMSI year, ETA_NUM,
-- RSA_NUM), the latest delivered version of each.

with delivered as (
    select * from {{ raw_rows('t_mcoaab') }}
),

typed as (
    select
        {{ pmsi_stay_key() }},
        {{ as_string('COD_SEX') }} as cod_sex,
        {{ as_integer('AGE_ANN') }} as age_ann,
        {{ as_integer('AGE_JOU') }} as age_jou,
        {{ as_string('BDI_DEP') }} as bdi_dep,
        {{ as_string('BDI_COD') }} as bdi_cod,
        {{ as_string('DGN_PAL') }} as dgn_pal,
        {{ as_string('DGN_REL') }} as dgn_rel,
        {{ as_string('GRG_GHM') }} as grg_ghm,
        {{ as_string('SEJ_TYP') }} as sej_typ,
        {{ as_integer('GHS_NUM') }} as ghs_num,
        {{ as_integer('TYP_GEN_RSA') }} as typ_gen_rsa,
        {{ as_string('ENT_MOD') }} as ent_mod,
        {{ as_string('ENT_PRV') }} as ent_prv,
        {{ as_string('SOR_MOD') }} as sor_mod,
        {{ as_string('SOR_DES') }} as sor_des,
        {{ as_integer('SEJ_NBJ') }} as sej_nbj,
        {{ as_integer('NBR_DGN') }} as nbr_dgn,
        {{ as_integer('NBR_ACT') }} as nbr_act,
        {{ as_integer('NBR_SEA') }} as nbr_sea,
        {{ as_year('SOR_ANN') }} as sor_ann,
        {{ as_month('SOR_MOI') }} as sor_moi,
        {{ delivery_lineage() }}
    from delivered
)

select {{ columns_except(['hdh_source_file', 'file_row_number']) }}
from typed
{{ latest_pmsi_stay_delivery(one_row_per_stay=true) }}
