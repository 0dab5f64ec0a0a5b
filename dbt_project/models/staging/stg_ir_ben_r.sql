-- The beneficiary referential, typed: one row per pseudonym and twin rank
-- (BEN_NIR_PSA, BEN_RNG_GEM), the latest delivered version of each.

with delivered as (
    select * from {{ raw_rows('ir_ben_r') }}
),

typed as (
    select
        {{ as_string('BEN_NIR_PSA') }} as ben_nir_psa,
        {{ as_integer('BEN_RNG_GEM') }} as ben_rng_gem,
        {{ as_string('BEN_NIR_ANO') }} as ben_nir_ano,
        {{ as_string('BEN_IDT_ANO') }} as ben_idt_ano,
        {{ as_boolean('BEN_IDT_TOP') }} as ben_idt_top,
        {{ as_string('BEN_CDI_NIR') }} as ben_cdi_nir,
        {{ as_integer('BEN_SEX_COD') }} as ben_sex_cod,
        {{ as_year('BEN_NAI_ANN') }} as ben_nai_ann,
        {{ as_month('BEN_NAI_MOI') }} as ben_nai_moi,
        {{ as_string('BEN_RES_DPT') }} as ben_res_dpt,
        {{ as_string('BEN_RES_COM') }} as ben_res_com,
        {{ as_date('BEN_DCD_DTE') }} as ben_dcd_dte,
        {{ as_string('ORG_AFF_BEN') }} as org_aff_ben,
        {{ as_date('BEN_DTE_INS') }} as ben_dte_ins,
        {{ as_date('BEN_DTE_MAJ') }} as ben_dte_maj,
        {{ as_date('MAX_TRT_DTD') }} as max_trt_dtd,
        {{ delivery_lineage() }}
    from delivered
)

select {{ columns_except(['hdh_source_file', 'file_row_number']) }}
from typed
qualify row_number() over (
    partition by ben_nir_psa, ben_rng_gem
    order by {{ latest_delivery_first() }}
) = 1
