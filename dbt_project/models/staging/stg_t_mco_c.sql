-- PMSI MCO stay pseudonyms and dates (T_MCOaaC), typed: one row per stay
-- (PMSI year, ETA_NUM, RSA_NUM), the latest delivered version of each. The
-- SNDS export formats of its dates come from the registry.

with delivered as (
    select * from {{ raw_rows('t_mcoaac') }}
),

typed as (
    select
        {{ pmsi_stay_key() }},
        {{ as_string('NIR_ANO_17') }} as nir_ano_17,
        {{ as_datetime('EXE_SOI_DTD', '%d%b%Y:%H:%M:%S') }} as exe_soi_dtd,
        {{ as_datetime('EXE_SOI_DTF', '%d%b%Y:%H:%M:%S') }} as exe_soi_dtf,
        {{ as_date('ENT_DAT', '%d%m%Y') }} as ent_dat,
        {{ as_date('SOR_DAT', '%d%m%Y') }} as sor_dat,
        {{ as_year('SOR_ANN') }} as sor_ann,
        {{ as_month('SOR_MOI') }} as sor_moi,
        {{ as_string('NIR_RET') }} <> '0' as nir_ret,
        {{ as_string('NAI_RET') }} as nai_ret,
        {{ as_string('SEX_RET') }} <> '0' as sex_ret,
        {{ as_string('SEJ_RET') }} <> '0' as sej_ret,
        {{ as_string('FHO_RET') }} <> '0' as fho_ret,
        {{ as_string('PMS_RET') }} <> '0' as pms_ret,
        {{ as_string('DAT_RET') }} as dat_ret,
        {{ as_string('COH_NAI_RET') }} <> '0' as coh_nai_ret,
        {{ as_string('COH_SEX_RET') }} <> '0' as coh_sex_ret,
        {{ delivery_lineage() }}
    from delivered
)

select {{ columns_except(['hdh_source_file', 'file_row_number']) }}
from typed
{{ latest_pmsi_stay_delivery(one_row_per_stay=true) }}
