-- OMOP CDM 5.4 PROCEDURE_OCCURRENCE: the CCAM acts of the PMSI MCO (T_MCOaaA)
-- and of ambulatory care in the DCIR (ER_CAM_F), for persons of the OMOP
-- person table. The SNDS rules are those of the other tables, never repeated:
--
-- - PMSI: the acts of the stays that are visits (omop_visit_occurrence: stays
--   the SNDS rules retain, linked to one person, not opted out), dated by the
--   stay's entry date plus the act's delay from entry, ENT_DAT_DEL (NULL read
--   as 0, as SCALPEL-Extraction's McoCcamActExtractor does). An act whose
--   delay dates it before the entry or after the discharge contradicts its
--   stay and is left out (the CDM wants a visit's events inside the visit).
--   Quantity: NBR_EXE_ACT, the times the act was performed.
-- - DCIR: the acts of countable claim lines with their regularisations netted
--   (netted_ccam_acts: DPN_QLF = 71, no base act, supplements and cancelled
--   acts out), dated by the day of care EXE_SOI_DTD (an act without it is left
--   out), not attached to a visit (ambulatory care has none in this CDM).
--   Quantity: the net PRS_ACT_QTE.
--
-- The CCAM code is the source value; its concepts come from
-- int_omop_concept_map (code system ccam), 0 until the OHDSI vocabularies are
-- loaded. The type says the source: 32855 Inpatient claim for the PMSI,
-- 32810 Claim for the DCIR, as its other tables.
with visits as (
    select visit_occurrence_id, person_id, visit_start_date, visit_end_date
    from {{ ref('omop_visit_occurrence') }}
),

stay_acts as (
    select
        *,
        -- The stay's visit, identified as in omop_visit_occurrence.
        {{ surrogate_id(['pmsi_year', 'eta_num', 'rsa_num']) }} as visit_occurrence_id,
        -- T_MCOaaA has no act number: the acts of a stay are numbered in the
        -- order of their content, so the same set gives the same ids.
        row_number() over (
            partition by pmsi_year, eta_num, rsa_num
            order by
                cdc_act nulls last, acv_act nulls last, pha_act nulls last, ent_dat_del nulls last,
                ext_pmsi nulls last, mod_act nulls last, doc_act nulls last, anp_act nulls last,
                rem_exp_act nulls last, cmp_dat nulls last, nbr_exe_act nulls last, rum_seq nulls last,
                rss_num nulls last
        ) as act_number
    from {{ ref('stg_t_mco_a') }}
),

dated_stay_acts as (
    select
        stay_acts.*,
        visits.person_id,
        visits.visit_start_date + cast(coalesce(stay_acts.ent_dat_del, 0) as integer) as act_date,
        visits.visit_end_date
    from stay_acts
    inner join visits using (visit_occurrence_id)
),

ambulatory_acts as (
    {{ netted_ccam_acts() }}
),

ccam_concepts as (
    select source_code, source_concept_id, standard_concept_id
    from {{ ref('int_omop_concept_map') }}
    where code_system = 'ccam'
),

procedures as (
    select
        {{ surrogate_id(["'MCO'", 'pmsi_year', 'eta_num', 'rsa_num', 'act_number']) }} as procedure_occurrence_id,
        person_id,
        act_date as procedure_date,
        32855 as procedure_type_concept_id, -- Inpatient claim
        cast(nbr_exe_act as integer) as quantity,
        visit_occurrence_id,
        cdc_act as procedure_source_value,
        mod_act as modifier_source_value
    from dated_stay_acts
    where cdc_act is not null
        and act_date <= visit_end_date
        and coalesce(ent_dat_del, 0) >= 0
    union all
    select
        {{ surrogate_id([
            "'DCIR'", 'acts.dct_ord_num', 'acts.flx_dis_dtd', 'acts.flx_emt_num', 'acts.flx_emt_ord',
            'acts.flx_emt_typ', 'acts.flx_trt_dtd', 'acts.org_cle_num', 'acts.prs_ord_num',
            'acts.rem_typ_aff', 'acts.cam_ord_num',
        ]) }} as procedure_occurrence_id,
        omop_person.person_id,
        acts.exe_soi_dtd as procedure_date,
        32810 as procedure_type_concept_id, -- Claim
        cast(acts.net_quantity as integer) as quantity,
        cast(null as bigint) as visit_occurrence_id,
        acts.cam_prs_ide as procedure_source_value,
        acts.cam_mod_cod as modifier_source_value
    from ambulatory_acts as acts
    inner join {{ ref('omop_person') }} as omop_person
        on omop_person.person_source_value = acts.ben_idt_ano
    where acts.net_quantity > 0
        and acts.exe_soi_dtd is not null
        and acts.cam_prs_ide is not null
        and not {{ is_opted_out('acts.ben_nir_psa', 'acts.ben_rng_gem') }}
)

select
    procedures.procedure_occurrence_id,
    procedures.person_id,
    coalesce(ccam_concepts.standard_concept_id, 0) as procedure_concept_id,
    procedures.procedure_date,
    cast(procedures.procedure_date as timestamp) as procedure_datetime,
    procedures.procedure_date as procedure_end_date,
    cast(procedures.procedure_date as timestamp) as procedure_end_datetime,
    procedures.procedure_type_concept_id,
    0 as modifier_concept_id,
    procedures.quantity,
    cast(null as bigint) as provider_id,
    procedures.visit_occurrence_id,
    cast(null as bigint) as visit_detail_id,
    procedures.procedure_source_value,
    coalesce(ccam_concepts.source_concept_id, 0) as procedure_source_concept_id,
    procedures.modifier_source_value
from procedures
left join ccam_concepts on ccam_concepts.source_code = procedures.procedure_source_value
