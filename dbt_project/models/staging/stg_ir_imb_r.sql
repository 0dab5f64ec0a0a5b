-- The medical referential of exemptions (IR_IMB_R: long-term illnesses, work
-- accidents…), typed. It has no business key (a change or a renewal adds a
-- row), so a pseudonym's rows are replaced as a set: they come from the latest
-- delivery that holds rows for that pseudonym and twin rank.

with delivered as (
    select * from {{ raw_rows('ir_imb_r') }}
),

typed as (
    select
        {{ as_string('BEN_NIR_PSA') }} as ben_nir_psa,
        {{ as_integer('BEN_RNG_GEM') }} as ben_rng_gem,
        {{ as_integer('IMB_ALD_NUM') }} as imb_ald_num,
        {{ as_date('IMB_ALD_DTD') }} as imb_ald_dtd,
        {{ as_date('IMB_ALD_DTF') }} as imb_ald_dtf,
        {{ as_integer('IMB_ETM_NAT') }} as imb_etm_nat,
        {{ as_string('MED_MTF_COD') }} as med_mtf_cod,
        {{ as_string('MED_NCL_IDT') }} as med_ncl_idt,
        {{ as_date('INS_DTE') }} as ins_dte,
        {{ as_date('UPD_DTE') }} as upd_dte,
        {{ delivery_columns() }}
    from delivered
)

select *
from typed
qualify rank() over (
    partition by ben_nir_psa, ben_rng_gem
    order by {{ latest_delivery_first(within_delivery=false) }}
) = 1
