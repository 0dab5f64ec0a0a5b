-- The opt-out registry, typed: one row per opt-out (BEN_NIR_PSA, BEN_RNG_GEM,
-- OPT_OUT_DTE), the latest delivered version of each (a withdrawal arrives as
-- a new version of the same opt-out, status WITHDRAWN).

with delivered as (
    select * from {{ raw_rows('opt_out') }}
),

typed as (
    select
        {{ as_string('BEN_NIR_PSA') }} as ben_nir_psa,
        {{ as_integer('BEN_RNG_GEM') }} as ben_rng_gem,
        {{ as_date('OPT_OUT_DTE') }} as opt_out_dte,
        {{ as_date('OPT_END_DTE') }} as opt_end_dte,
        {{ as_string('OPT_SCOPE') }} as opt_scope,
        {{ as_string('OPT_STATUS') }} as opt_status,
        {{ delivery_lineage() }}
    from delivered
)

select {{ columns_except(['hdh_source_file', 'file_row_number']) }}
from typed
qualify row_number() over (
    partition by ben_nir_psa, ben_rng_gem, opt_out_dte
    order by {{ latest_delivery_first() }}
) = 1
