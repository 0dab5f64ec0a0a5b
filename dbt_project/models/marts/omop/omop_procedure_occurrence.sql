-- OMOP CDM 5.4 PROCEDURE_OCCURRENCE, empty but typed. The CCAM sources are
-- registered (T_MCOaaA for the PMSI's acts, ER_CAM_F for the ambulatory ones)
-- but only with generated staging, which applies no SNDS rule: mapping them
-- needs hand-written staging that keeps only the acts of retained stays (and of
-- countable DCIR lines), not done yet. T_MCOaaB.NBR_ACT only counts them. The
-- table exists so that OMOP tools find the complete subset.
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
