-- PMSI MCO medical units (T_MCOaaUM), typed: one row per unit summary (RUM)
-- of a stay with the unit's own principal (DGN_PAL) and related (DGN_REL)
-- diagnoses, from the latest delivery that holds units for that stay, so a
-- corrected stay does not keep units its new version dropped (replaced as a
-- set, like the diagnoses of stg_t_mco_d). The table also holds fictitious
-- RSA: only the units of the stays int_hospital_stays retains are read
-- downstream. ETA_NUM is text (2A/2B in Corsica) and RSA_NUM, a zero-padded
-- index, is read as an integer, as in every PMSI staging model, so that the
-- stay key is the same everywhere.

with delivered as (
    select * from {{ raw_rows('t_mcoaaum') }}
),

typed as (
    select
        {{ pmsi_stay_key() }},
        {{ as_string('RSS_NUM') }} as rss_num,
        {{ as_integer('UM_ORD_NUM') }} as um_ord_num,
        {{ as_string('DGN_PAL') }} as dgn_pal,
        {{ as_string('DGN_REL') }} as dgn_rel,
        {{ delivery_columns() }}
    from delivered
)

select *
from typed
{{ latest_pmsi_stay_delivery(one_row_per_stay=false) }}
