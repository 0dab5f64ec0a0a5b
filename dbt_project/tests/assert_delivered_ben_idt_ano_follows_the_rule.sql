-- Warns when delivered BEN_IDT_ANO values differ from the documented rule
-- (int_ben_idt_ano_conformity): the counts only, never a value.
{{ config(severity='warn') }}

select pseudonym_count, missing_count, mismatch_count
from {{ ref('int_ben_idt_ano_conformity') }}
where mismatch_count > 0
