-- One row per person (BEN_IDT_ANO) with the attributes of the referential row
-- updated last among the person's pseudonyms; a death known under any of them
-- counts, and so does a death at discharge from hospital (SOR_MOD = 9,
-- int_hospital_deaths) the referential does not know yet: the death date is
-- the earliest of the two.

with pseudonyms as (
    select * from {{ ref('int_pseudonym_persons') }}
),

latest_known as (
    select *
    from pseudonyms
    qualify row_number() over (
        partition by ben_idt_ano
        order by ben_dte_maj desc nulls last, ben_nir_psa, ben_rng_gem
    ) = 1
),

across_pseudonyms as (
    select
        ben_idt_ano,
        count(*) as pseudonym_count,
        max(ben_dcd_dte) as death_date
    from pseudonyms
    group by ben_idt_ano
)

select
    latest_known.ben_idt_ano,
    latest_known.ben_sex_cod as sex_code,
    latest_known.ben_nai_ann as birth_year,
    latest_known.ben_nai_moi as birth_month,
    least(
        coalesce(across_pseudonyms.death_date, hospital_deaths.hospital_death_date),
        coalesce(hospital_deaths.hospital_death_date, across_pseudonyms.death_date)
    ) as death_date,
    across_pseudonyms.death_date as referential_death_date,
    hospital_deaths.hospital_death_date,
    latest_known.ben_res_dpt as residence_departement,
    latest_known.ben_res_com as residence_commune,
    across_pseudonyms.pseudonym_count
from latest_known
inner join across_pseudonyms using (ben_idt_ano)
left join {{ ref('int_hospital_deaths') }} as hospital_deaths using (ben_idt_ano)
