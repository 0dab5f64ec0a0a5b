-- Source codes of the SNDS -> OMOP concepts, from the OHDSI vocabularies when
-- they are loaded (var hdh_omop_vocabulary_schema names the DuckDB schema that
-- holds Athena's CONCEPT and CONCEPT_RELATIONSHIP; docs/normalisation.md).
-- Without them the map is empty and every OMOP model keeps concept id 0.
--
-- One row per (code_system, source_code): the source concept of the first
-- vocabulary of the var's list that holds the code (valid concepts first), and
-- the standard concept it "Maps to" (the smallest id when it maps to several).
-- Codes are compared without their dots: the PMSI writes I214 where the
-- vocabularies write I21.4. Code systems: icd10 (PMSI diagnoses), cip7
-- (the 7 digits of a French CIP13 after its 34009 prefix, which is how the
-- BDPM vocabulary codes a pack) and ccam (CCAM acts of the PMSI and the DCIR).
{%- set vocabulary_schema = var('hdh_omop_vocabulary_schema') %}
{%- set code_systems = {
    'icd10': var('hdh_omop_condition_vocabularies'),
    'cip7': var('hdh_omop_drug_vocabularies'),
    'ccam': var('hdh_omop_procedure_vocabularies'),
} %}

{% if vocabulary_schema is none %}

select
    cast(null as {{ dbt.type_string() }}) as code_system,
    cast(null as {{ dbt.type_string() }}) as source_code,
    cast(null as integer) as source_concept_id,
    cast(null as integer) as standard_concept_id
where false

{% else %}

{%- set concept = api.Relation.create(database=target.database, schema=vocabulary_schema, identifier='concept') %}
{%- set concept_relationship = api.Relation.create(
    database=target.database, schema=vocabulary_schema, identifier='concept_relationship') %}

with vocabulary_priorities as (
    {%- for code_system, vocabularies in code_systems.items() %}
    {%- for vocabulary in vocabularies %}
    select '{{ code_system }}' as code_system, '{{ vocabulary }}' as vocabulary_id, {{ loop.index }} as priority
    {%- if not loop.last %} union all{% endif %}
    {%- endfor %}
    {%- if not loop.last %} union all{% endif %}
    {%- endfor %}
),

source_concepts as (
    select
        vocabulary_priorities.code_system,
        replace(concept.concept_code, '.', '') as source_code,
        concept.concept_id as source_concept_id
    from {{ concept }} as concept
    inner join vocabulary_priorities using (vocabulary_id)
    qualify row_number() over (
        partition by vocabulary_priorities.code_system, replace(concept.concept_code, '.', '')
        order by vocabulary_priorities.priority, concept.invalid_reason nulls first, concept.concept_id
    ) = 1
),

standard_concepts as (
    select maps_to.concept_id_1 as source_concept_id, min(maps_to.concept_id_2) as standard_concept_id
    from {{ concept_relationship }} as maps_to
    inner join {{ concept }} as standard on standard.concept_id = maps_to.concept_id_2
    where maps_to.relationship_id = 'Maps to'
        and maps_to.invalid_reason is null
        and standard.standard_concept = 'S'
    group by maps_to.concept_id_1
)

select
    source_concepts.code_system,
    source_concepts.source_code,
    cast(source_concepts.source_concept_id as integer) as source_concept_id,
    cast(coalesce(standard_concepts.standard_concept_id, 0) as integer) as standard_concept_id
from source_concepts
left join standard_concepts using (source_concept_id)

{% endif %}
