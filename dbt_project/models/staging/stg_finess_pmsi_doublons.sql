-- The geographic FINESS whose PMSI stays also arrive under their legal FINESS
-- (AP-HP, AP-HM, HCL), typed: one row per FINESS and first year, the latest
-- delivered version. The FINESS is read as the integer of the PMSI staging
-- models so that it joins ETA_NUM directly.

with delivered as (
    select * from {{ raw_rows('finess_pmsi_doublons') }}
),

typed as (
    select
        {{ as_integer('ETA_NUM') }} as eta_num,
        {{ as_integer('ETA_NUM_JUR') }} as legal_eta_num,
        {{ as_string('ETA_GRP') }} as hospital_group,
        {{ as_year('ANN_DEB') }} as first_year,
        {{ as_year('ANN_FIN') }} as last_year,
        {{ delivery_lineage() }}
    from delivered
)

select {{ columns_except(['hdh_source_file', 'file_row_number']) }}
from typed
qualify row_number() over (
    partition by eta_num, first_year
    order by {{ latest_delivery_first() }}
) = 1
