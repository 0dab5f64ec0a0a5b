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
        {{ pmsi_year() }} as pmsi_year,
        {{ as_string('ETA_NUM') }} as eta_num,
        {{ as_integer('RSA_NUM') }} as rsa_num,
        {{ as_string('RSS_NUM') }} as rss_num,
        {{ as_string('ASS_DGN') }} as ass_dgn,
        {{ as_integer('DGN_ASS_NUM') }} as dgn_ass_num,
        hdh_provider,
        hdh_delivery_id,
        hdh_dataset,
        hdh_loaded_at
    from delivered
)

select *
from typed
qualify rank() over (
    partition by pmsi_year, eta_num, rsa_num
    order by {{ latest_delivery_first(within_delivery=false) }}
) = 1
