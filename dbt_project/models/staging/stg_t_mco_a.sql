-- PMSI MCO CCAM acts (T_MCOaaA), typed: the acts of each stay from the latest
-- delivery that holds acts for that stay, so a corrected stay does not keep
-- acts its new version dropped (replaced as a set, like the diagnoses of
-- stg_t_mco_d). The table has no act number: two identical lines are two acts.
-- ETA_NUM is text (2A/2B in Corsica) and RSA_NUM, a zero-padded index, is
-- read as an integer, as in every PMSI staging model, so that the stay key is
-- the same everywhere.

with delivered as (
    select * from {{ raw_rows('t_mcoaaa') }}
),

typed as (
    select
        {{ pmsi_stay_key() }},
        {{ as_string('RSS_NUM') }} as rss_num,
        {{ as_string('RUM_SEQ') }} as rum_seq,
        {{ as_string('CDC_ACT') }} as cdc_act,
        {{ as_string('ACV_ACT') }} as acv_act,
        {{ as_string('PHA_ACT') }} as pha_act,
        {{ as_string('EXT_PMSI') }} as ext_pmsi,
        {{ as_string('MOD_ACT') }} as mod_act,
        {{ as_string('DOC_ACT') }} as doc_act,
        {{ as_string('ANP_ACT') }} as anp_act,
        {{ as_string('REM_EXP_ACT') }} as rem_exp_act,
        {{ as_string('CMP_DAT') }} as cmp_dat,
        {{ as_integer('ENT_DAT_DEL') }} as ent_dat_del,
        {{ as_integer('NBR_EXE_ACT') }} as nbr_exe_act,
        {{ delivery_columns() }}
    from delivered
)

select *
from typed
{{ latest_pmsi_stay_delivery(one_row_per_stay=false) }}
