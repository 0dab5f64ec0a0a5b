-- Analysis-ready long-term illnesses (ALD): one row per exemption period of
-- IR_IMB_R for a long-term illness (IMB_ETM_NAT 41 listed, 43 off-list, 45
-- multiple conditions; work accidents, occupational diseases and invalidity
-- are other exemptions), with its person and ICD-10 code, except the persons
-- who opted out (Documentation-SNDS, fiche "Bénéficiaires du dispositif ALD").

with exemptions as (
    select *
    from {{ ref('stg_ir_imb_r') }}
    where imb_etm_nat in (41, 43, 45)
)

select
    pseudonyms.ben_idt_ano,
    exemptions.ben_nir_psa,
    exemptions.ben_rng_gem,
    exemptions.imb_ald_num as ald_number,
    exemptions.imb_etm_nat as exemption_nature,
    case when exemptions.med_ncl_idt = 'CIM10' then exemptions.med_mtf_cod end as icd10_code,
    exemptions.imb_ald_dtd as start_date,
    exemptions.imb_ald_dtf as end_date
from exemptions
inner join {{ ref('int_pseudonym_persons') }} as pseudonyms using (ben_nir_psa, ben_rng_gem)
where not {{ is_opted_out('exemptions.ben_nir_psa', 'exemptions.ben_rng_gem') }}
