-- The external hospital cohort (COHORT_EXT), typed: one row per record. Record
-- ids are the sending hospital's own, so the key is (provider, COH_REC_ID),
-- the latest delivered version of each.

with delivered as (
    select * from {{ raw_rows('cohort_ext') }}
),

typed as (
    select
        {{ as_string('COH_REC_ID') }} as coh_rec_id,
        {{ as_string('BEN_NIR_PSA') }} as ben_nir_psa,
        {{ as_year('NAI_ANN') }} as nai_ann,
        {{ as_integer('NAI_MOI') }} as nai_moi,
        {{ as_integer('SEX_COD') }} as sex_cod,
        {{ as_string('RES_DPT') }} as res_dpt,
        {{ as_string('RES_COM') }} as res_com,
        {{ as_date('INC_DTE') }} as inc_dte,
        {{ as_date('DCD_DTE') }} as dcd_dte,
        {{ as_string('EVT_DGN') }} as evt_dgn,
        {{ as_integer('EVT_KILLIP') }} as evt_killip,
        {{ delivery_lineage() }}
    from delivered
)

select {{ columns_except(['hdh_source_file', 'file_row_number']) }}
from typed
qualify row_number() over (
    partition by hdh_provider, coh_rec_id
    order by {{ latest_delivery_first() }}
) = 1
