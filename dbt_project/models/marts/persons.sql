-- Analysis-ready persons: one row per person (BEN_IDT_ANO) of the
-- beneficiary referential, except those who opted out.

select persons.*
from {{ ref('int_persons') }} as persons
where not exists (
    select 1
    from {{ ref('int_opt_out_exclusions') }} as opted_out
    where opted_out.ben_idt_ano = persons.ben_idt_ano
)
