-- Every pseudonym whose data must stay out of the marts. An opt-out is given
-- under one pseudonym and twin rank but applies to the person (registry
-- OPT_OUT), so it extends to all the person's pseudonyms through BEN_IDT_ANO.
-- Every active opt-out counts, whatever its scope: the marts feed reuse of all
-- kinds. An opt-out under a pseudonym the referential does not hold (yet)
-- still excludes that pseudonym.

with active_opt_outs as (
    select distinct ben_nir_psa, ben_rng_gem
    from {{ ref('stg_opt_out') }}
    where opt_status = 'ACTIVE'
),

pseudonyms as (
    select ben_nir_psa, ben_rng_gem, ben_idt_ano
    from {{ ref('int_pseudonym_persons') }}
),

opted_out_persons as (
    select distinct pseudonyms.ben_idt_ano
    from active_opt_outs
    inner join pseudonyms using (ben_nir_psa, ben_rng_gem)
),

pseudonyms_of_opted_out_persons as (
    select pseudonyms.ben_nir_psa, pseudonyms.ben_rng_gem, pseudonyms.ben_idt_ano
    from pseudonyms
    inner join opted_out_persons using (ben_idt_ano)
),

unknown_pseudonyms as (
    select active_opt_outs.ben_nir_psa, active_opt_outs.ben_rng_gem, cast(null as varchar) as ben_idt_ano
    from active_opt_outs
    anti join pseudonyms using (ben_nir_psa, ben_rng_gem)
)

select * from pseudonyms_of_opted_out_persons
union all
select * from unknown_pseudonyms
