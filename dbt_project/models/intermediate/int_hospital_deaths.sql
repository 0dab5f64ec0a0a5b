-- Deaths at discharge: a PMSI MCO stay ending with SOR_MOD = 9 (death) tells
-- the person died on the stay's last day, which the referential may not know
-- yet. One row per person, the earliest such day. Only stays linked to exactly
-- one person count (a twin's stay cannot say which twin died).

select
    ben_idt_ano,
    min(coalesce(stay_end_date, stay_start_date)) as hospital_death_date
from {{ ref('int_pmsi_stays') }}
where person_link_status = 'linked'
    and sor_mod = '9'
    and stay_status <> 'duplicate_finess'
group by ben_idt_ano
