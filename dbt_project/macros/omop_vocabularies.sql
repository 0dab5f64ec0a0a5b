{#- Loads the OHDSI vocabulary tables the OMOP models read (CONCEPT,
    CONCEPT_RELATIONSHIP, and VOCABULARY for cdm_source's version) from an Athena download into a schema of the
    warehouse, replacing what an earlier load left there:

        dbt run-operation load_omop_vocabularies --args '{folder: /path/to/athena, schema: vocabulary}'

    then build with --vars '{hdh_omop_vocabulary_schema: vocabulary}' (docs/normalisation.md).
    Athena writes tab-separated files with a header, no quoting (names hold
    quotes) and dates as YYYYMMDD. -#}
{% macro load_omop_vocabularies(folder, schema='vocabulary') %}
    {%- set athena_tables = {
        'concept': {
            'concept_id': 'INTEGER', 'concept_name': 'VARCHAR', 'domain_id': 'VARCHAR',
            'vocabulary_id': 'VARCHAR', 'concept_class_id': 'VARCHAR', 'standard_concept': 'VARCHAR',
            'concept_code': 'VARCHAR', 'valid_start_date': 'DATE', 'valid_end_date': 'DATE',
            'invalid_reason': 'VARCHAR',
        },
        'concept_relationship': {
            'concept_id_1': 'INTEGER', 'concept_id_2': 'INTEGER', 'relationship_id': 'VARCHAR',
            'valid_start_date': 'DATE', 'valid_end_date': 'DATE', 'invalid_reason': 'VARCHAR',
        },
        'vocabulary': {
            'vocabulary_id': 'VARCHAR', 'vocabulary_name': 'VARCHAR', 'vocabulary_reference': 'VARCHAR',
            'vocabulary_version': 'VARCHAR', 'vocabulary_concept_id': 'INTEGER',
        },
    } -%}
    {%- if not modules.re.fullmatch('[A-Za-z_][A-Za-z0-9_]*', schema) -%}
        {{ exceptions.raise_compiler_error("The vocabulary schema must be a plain SQL name, got " ~ schema ~ ".") }}
    {%- endif -%}
    {%- do run_query('create schema if not exists ' ~ adapter.quote(schema)) -%}
    {%- for table, columns in athena_tables.items() -%}
        {%- set path = folder ~ '/' ~ table.upper() ~ '.csv' -%}
        {%- set relation = api.Relation.create(database=target.database, schema=schema, identifier=table) -%}
        {%- set column_types -%}
            { {%- for name, type in columns.items() %}'{{ name }}': '{{ type }}'{{ ', ' if not loop.last }}{% endfor -%} }
        {%- endset -%}
        {%- do run_query(
            'create or replace table ' ~ relation ~ ' as select * from read_csv('
            ~ "'" ~ path | replace("'", "''") ~ "', delim = '\t', quote = '', escape = '', header = true, "
            ~ "dateformat = '%Y%m%d', columns = " ~ column_types ~ ')'
        ) -%}
        {%- set loaded = run_query('select count(*) from ' ~ relation).columns[0].values()[0] -%}
        {{ log('Loaded ' ~ loaded ~ ' rows into ' ~ relation ~ ' from ' ~ path ~ '.', info=true) }}
    {%- endfor -%}
    {%- do adapter.commit() -%}
{% endmacro %}
