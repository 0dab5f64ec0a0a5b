{#- Models land in the schema their folder names (staging, intermediate, marts,
    omop), not in "<target schema>_<name>" as dbt does by default: the
    warehouse has one environment per file, so a prefix would only get in the
    way of the people and tools reading it. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
