{#- Every row of one raw table across all published deliveries, as a relation
    to select from, with two more columns that order rows within a delivery:
    hdh_source_file (the Parquet file) and file_row_number (the row in it).

    The raw table is the glob of the `raw` source (models/staging/_sources.yml).
    read_parquet fails with "No files found" on a glob that matches nothing,
    which is the normal state of a dataset nobody has delivered yet, so the
    glob is listed first (DuckDB's glob() at run time) and, when it is empty,
    the relation is an empty one with the source's declared columns and types.
    Only the rows of the dataset's authoritative providers are kept.
    At parse time nothing is listed: calling source() is what records the
    lineage. The rights requests' oppositions (source `rights`) are read the
    same way, with source_name='rights'; the hub writes them itself, so they
    have no provider to filter on. -#}
{% macro raw_rows(table_name, source_name='raw') %}
    {%- set raw = source(source_name, table_name) -%}
    {%- if execute and not raw_files_exist(raw) -%}
        {{ empty_raw_relation(table_name, source_name) }}
    {%- elif source_name == 'raw' -%}
        (
            select * from read_parquet({{ raw.external }}, union_by_name = true,
                                       filename = 'hdh_source_file', file_row_number = true)
            where hdh_provider in ({{ authoritative_providers(table_name) }})
        )
    {%- else -%}
        read_parquet({{ raw.external }}, union_by_name = true,
                     filename = 'hdh_source_file', file_row_number = true)
    {%- endif -%}
{% endmacro %}


{#- The providers allowed to deliver the dataset, as SQL literals: the source's
    meta.hdh_providers, which tests/test_dbt_models.py keeps equal to the
    registry's "providers". Provider ids are [a-z0-9_-] (the registry refuses
    others), so quoting them is enough. -#}
{% macro authoritative_providers(table_name) %}
    {%- if not execute -%}
        {{ return("''") }}
    {%- endif -%}
    {%- set providers = source_node(table_name).config.meta.get('hdh_providers') -%}
    {%- if not providers -%}
        {{ exceptions.raise_compiler_error(
            "Source raw." ~ table_name ~ " has no meta.hdh_providers: copy the registry's providers.") }}
    {%- endif -%}
    {%- for provider in providers -%}
        '{{ provider }}'{{ ", " if not loop.last }}
    {%- endfor -%}
{% endmacro %}


{% macro source_node(table_name, source_name='raw') %}
    {{ return(graph.sources.values()
        | selectattr('source_name', 'equalto', source_name)
        | selectattr('name', 'equalto', table_name)
        | first) }}
{% endmacro %}


{% macro raw_files_exist(raw) %}
    {%- if env_var('HDH_RAW_ROOT', '') == '' -%}
        {{ exceptions.raise_compiler_error(
            "HDH_RAW_ROOT is not set: it must name the raw tables' root (<private root>/raw).") }}
    {%- endif -%}
    {%- set listed = run_query('select count(*) from glob(' ~ raw.external ~ ')') -%}
    {{ return(listed.columns[0].values()[0] > 0) }}
{% endmacro %}


{% macro empty_raw_relation(table_name, source_name='raw') %}
    {%- set node = source_node(table_name, source_name) -%}
    (
        select
        {%- for column in node.columns.values() %}
            cast(null as {{ column.data_type }}) as {{ adapter.quote(column.name) }},
        {%- endfor %}
            cast(null as varchar) as hdh_source_file,
            cast(null as bigint) as file_row_number
        where false
    )
{% endmacro %}
