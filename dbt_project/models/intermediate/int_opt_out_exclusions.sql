-- Every pseudonym whose data must stay out of the marts. An opt-out is given
-- under one pseudonym and twin rank but applies to the person (registry
-- OPT_OUT), so it extends to all the person's pseudonyms through BEN_IDT_ANO.
-- Opt-outs come from two sources, unioned here so that every purge reads this
-- one model: the national registry (OPT_OUT, every active opt-out whatever its
-- scope: the marts feed reuse of all kinds) and the oppositions made through
-- the hub's rights form (stg_rights_oppositions). `source` says which:
-- national_registry, rights_request, or both comma-separated. An opt-out under
-- a pseudonym the referential does not hold (yet) still excludes that pseudonym.

with active_opt_outs as (
    select ben_nir_psa, ben_rng_gem, 'national_registry' as source
    from {{ ref('stg_opt_out') }}
    where opt_status = 'ACTIVE'
    union
    select ben_nir_psa, ben_rng_gem, 'rights_request' as source
    from {{ ref('stg_rights_oppositions') }}
    where rights_action = 'OPPOSITION'
),

pseudonyms as (
    select ben_nir_psa, ben_rng_gem, ben_idt_ano
    from {{ ref('int_pseudonym_persons') }}
),

opted_out_persons as (
    select distinct pseudonyms.ben_idt_ano, active_opt_outs.source
    from active_opt_outs
    inner join pseudonyms using (ben_nir_psa, ben_rng_gem)
),

pseudonyms_of_opted_out_persons as (
    select pseudonyms.ben_nir_psa, pseudonyms.ben_rng_gem, pseudonyms.ben_idt_ano, opted_out_persons.source
    from pseudonyms
    inner join opted_out_persons using (ben_idt_ano)
),

unknown_pseudonyms as (
    select
        active_opt_outs.ben_nir_psa,
        active_opt_outs.ben_rng_gem,
        cast(null as {{ dbt.type_string() }}) as ben_idt_ano,
        active_opt_outs.source
    from active_opt_outs
    anti join pseudonyms using (ben_nir_psa, ben_rng_gem)
),

excluded as (
    select * from pseudonyms_of_opted_out_persons
    union all
    select * from unknown_pseudonyms
)

select
    ben_nir_psa,
    ben_rng_gem,
    any_value(ben_idt_ano) as ben_idt_ano,
    {{ sorted_distinct_join('source', ',') }} as source
from excluded
group by ben_nir_psa, ben_rng_gem
