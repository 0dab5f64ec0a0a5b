{#- What Dagster shows of a model it has just built, logged by the dbt run itself
    (a post-hook of every model, dbt_project.yml): the model's columns and types,
    its parent models' columns and types, and its row count, as one JSON log line.

    dagster-dbt reads a JSON log line of a node as that node's column metadata:
    from "columns" it makes the materialization's column schema, from "parents"
    and the compiled SQL (sqlglot) its column lineage. The row count is read by
    hdh_pipelines/assets/normalisation.py (key ROW_COUNT_KEY there). Asking dbt's
    own connection matters: the DuckDB file takes one writer, so a second
    connection from the Dagster process would wait for, or break, the run.
    Only under Dagster (dagster-dbt sets DAGSTER_DBT_CLI); counts, names and
    types only, never a value. -#}
{% macro log_dagster_metadata() %}
    {%- if execute and env_var('DAGSTER_DBT_CLI', '') == 'true' -%}
        {%- set parents = {} -%}
        {%- for parent_id in model.depends_on.nodes if parent_id in graph.nodes -%}
            {%- set parent = graph.nodes[parent_id] -%}
            {%- set relation = adapter.get_relation(parent.database, parent.schema, parent.alias or parent.name) -%}
            {%- if relation is not none -%}
                {%- do parents.update({parent.relation_name: {'columns': column_types(relation)}}) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- set counted = run_query('select count(*) from ' ~ this) -%}
        {%- do log(tojson({
            'columns': column_types(this),
            'parents': parents,
            'hdh_row_count': counted.columns[0].values()[0] | int,
        }), info=true) -%}
    {%- endif -%}
{% endmacro %}


{%- macro column_types(relation) -%}
    {%- set types = {} -%}
    {%- for column in adapter.get_columns_in_relation(relation) -%}
        {%- do types.update({column.name: {'data_type': column.data_type}}) -%}
    {%- endfor -%}
    {{- return(types) -}}
{%- endmacro %}
