-- OMOP CDM 5.4 PROCEDURE_OCCURRENCE, empty but typed: no dataset of the
-- registry carries a CCAM code today. The PMSI's procedures are in T_MCOaaA
-- and the ambulatory ones in ER_CAM_F, neither of which is registered;
-- T_MCOaaB.NBR_ACT only counts them. The table exists so that OMOP tools find
-- the complete subset; it fills once one of those datasets is registered.
select
    cast(null as bigint) as procedure_occurrence_id,
    cast(null as bigint) as person_id,
    cast(null as integer) as procedure_concept_id,
    cast(null as date) as procedure_date,
    cast(null as timestamp) as procedure_datetime,
    cast(null as date) as procedure_end_date,
    cast(null as timestamp) as procedure_end_datetime,
    cast(null as integer) as procedure_type_concept_id,
    cast(null as integer) as modifier_concept_id,
    cast(null as integer) as quantity,
    cast(null as bigint) as provider_id,
    cast(null as bigint) as visit_occurrence_id,
    cast(null as bigint) as visit_detail_id,
    cast(null as {{ dbt.type_string() }}) as procedure_source_value,
    cast(null as integer) as procedure_source_concept_id,
    cast(null as {{ dbt.type_string() }}) as modifier_source_value
where false
