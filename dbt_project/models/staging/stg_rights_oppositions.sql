-- Oppositions received through the hub's rights form (hdh_pipelines/rights), one row per pseudonym and
-- twin rank: its latest request. The person's opposition is active while that request is an
-- OPPOSITION; a WITHDRAWAL ends it (and only it: the national registry's opt-outs are OPT_OUT's).

with received as (
    select * from {{ raw_rows('oppositions', 'rights') }}
),

typed as (
    select
        {{ as_string('BEN_NIR_PSA') }} as ben_nir_psa,
        {{ as_integer('BEN_RNG_GEM') }} as ben_rng_gem,
        {{ as_string('RIGHTS_ACTION') }} as rights_action,
        {{ as_string('REQUEST_ID') }} as request_id,
        cast(RECEIVED_AT as timestamp) as received_at
    from received
)

select *
from typed
qualify row_number() over (
    partition by ben_nir_psa, ben_rng_gem
    order by received_at desc, request_id desc
) = 1
