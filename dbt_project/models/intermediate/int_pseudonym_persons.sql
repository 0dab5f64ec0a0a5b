-- Person resolution: every pseudonym and twin rank of the referential
-- (BEN_NIR_PSA, BEN_RNG_GEM) with the person it belongs to, BEN_IDT_ANO:
-- the person's own pseudonymised NIR (BEN_NIR_ANO) when BEN_IDT_TOP = 1,
-- otherwise BEN_NIR_PSA || BEN_RNG_GEM. A person known under several
-- pseudonyms (a change of the holder of rights) has several rows; twins share
-- BEN_NIR_PSA and differ by rank, hence by person.

with referential as (
    select * from {{ ref('stg_ir_ben_r') }}
)

select
    ben_nir_psa,
    ben_rng_gem,
    case
        -- A top without the NIR it points to cannot name the person: fall back
        -- to the pseudonym, as for anyone without a NIR of their own.
        when ben_idt_top and ben_nir_ano is not null then ben_nir_ano
        else ben_nir_psa || cast(ben_rng_gem as {{ dbt.type_string() }})
    end as ben_idt_ano,
    ben_idt_ano as delivered_ben_idt_ano,
    ben_idt_top,
    ben_nir_ano,
    ben_sex_cod,
    ben_nai_ann,
    ben_nai_moi,
    ben_res_dpt,
    ben_res_com,
    ben_dcd_dte,
    ben_dte_ins,
    ben_dte_maj
from referential
