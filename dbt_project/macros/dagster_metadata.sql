{#- What Dagster shows of a model it has just built, logged by the dbt run itself
    (a post-hook of every model, dbt_project.yml), in two log lines.

    1. JSON: the model's columns and types and its parent models' columns and
       types. dagster-dbt takes a JSON log line of a node as that node's column
       metadata: from "columns" it makes the materialization's column schema,
       from "parents" and the compiled SQL (sqlglot) its column lineage. A model
       reading a raw source (a Parquet glob sqlglot cannot resolve) gets no
       "parents", so no lineage is attempted for it.
    2. "hdh_row_count=<n>": the row count, read by
       hdh_pipelines/assets/normalisation.py (ROW_COUNT_PREFIX there);
       dagster-dbt keeps JSON lines to itself, so this one is plain text.

    Asking dbt's own connection matters: the DuckDB file takes one writer, so a
    second connection from the Dagster process would wait for, or break, the
    run. Only under Dagster (dagster-dbt sets DAGSTER_DBT_CLI); counts, names
    and types only, never a value. -#}
{% macro log_dagster_metadata() %}
    {%- if execute and env_var('DAGSTER_DBT_CLI', '') == 'true' -%}
        {%- set metadata = {'columns': column_types(this)} -%}
        {%- if model.depends_on.nodes | reject('in', graph.nodes) | list | length == 0 -%}
            {%- set parents = {} -%}
            {%- for parent_id in model.depends_on.nodes -%}
                {%- set parent = graph.nodes[parent_id] -%}
                {%- set relation = adapter.get_relation(parent.database, parent.schema, parent.alias or parent.name) -%}
                {%- if relation is not none -%}
                    {%- do parents.update({parent.relation_name: {'columns': column_types(relation)}}) -%}
                {%- endif -%}
            {%- endfor -%}
            {%- do metadata.update({'parents': parents}) -%}
        {%- endif -%}
        {%- do log(tojson(metadata), info=true) -%}
        {%- set counted = run_query('select count(*) from ' ~ this) -%}
        {%- do log('hdh_row_count=' ~ (counted.columns[0].values()[0] | int), info=true) -%}
    {%- endif -%}
{% endmacro %}


{%- macro column_types(relation) -%}
    {%- set types = {} -%}
    {%- for column in adapter.get_columns_in_relation(relation) -%}
        {%- do types.update({column.name: {'data_type': column.data_type}}) -%}
    {%- endfor -%}
    {{- return(types) -}}
{%- endmacro %}
