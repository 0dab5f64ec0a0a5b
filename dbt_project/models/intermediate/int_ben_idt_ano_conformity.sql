-- Does the delivered BEN_IDT_ANO follow its documented rule (BEN_NIR_ANO when
-- BEN_IDT_TOP = 1, else BEN_NIR_PSA || BEN_RNG_GEM: Documentation-SNDS,
-- "L'essentiel du SNDS" and fiche "Identifiant des bénéficiaires")? The
-- project computes the person itself (int_pseudonym_persons); this model
-- counts, without any value, the referential rows whose delivered identifier
-- differs, so that the provider can be told. One row.

select
    count(*) as pseudonym_count,
    count(*) filter (where delivered_ben_idt_ano is null) as missing_count,
    count(*) filter (
        where delivered_ben_idt_ano is not null and delivered_ben_idt_ano <> ben_idt_ano
    ) as mismatch_count
from {{ ref('int_pseudonym_persons') }}
