{#- An OMOP model is named omop_<table> in dbt (model names are unique across
    the project: `persons` and `person` would be too close) and lands as the
    CDM table <table> in the omop schema, so that OHDSI tools find omop.person,
    omop.visit_occurrence… One rule for the folder instead of an alias in each
    model; an explicit alias still wins. Every other node keeps dbt's default. -#}
{% macro generate_alias_name(custom_alias_name=none, node=none) -%}
    {%- if custom_alias_name -%}
        {{ custom_alias_name | trim }}
    {%- elif node.resource_type == 'model' and node.config.schema == 'omop' and node.name.startswith('omop_') -%}
        {{ node.name[5:] }}
    {%- else -%}
        {{ default__generate_alias_name(custom_alias_name, node) }}
    {%- endif -%}
{%- endmacro %}
