-- PMSI MCO associated diagnoses (T_MCOaaD), typed: the diagnoses of each stay
-- from the latest delivery that holds diagnoses for that stay, so a corrected
-- stay does not keep diagnoses its new version dropped. ETA_NUM (a FINESS
-- number, 2A/2B in Corsica) is text in every PMSI table; RSA_NUM, a
-- zero-padded 10-digit index, is read as an integer in all of them so that
-- the stay key is the same everywhere.

with delivered as (
    select * from {{ raw_rows('t_mcoaad') }}
),

typed as (
    select
        {{ pmsi_stay_key() }},
        {{ as_string('RSS_NUM') }} as rss_num,
        {{ as_string('ASS_DGN') }} as ass_dgn,
        {{ as_integer('DGN_ASS_NUM') }} as dgn_ass_num,
        {{ delivery_columns() }}
    from delivered
)

select *
from typed
{{ latest_pmsi_stay_delivery(one_row_per_stay=false) }}
