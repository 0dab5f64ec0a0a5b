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
    {%- if source_name == 'raw' -%}
        (
            select * from {{ raw_files(raw, table_name, source_name) }}
            where hdh_provider in ({{ authoritative_providers(table_name) }})
        )
    {%- else -%}
        {{ raw_files(raw, table_name, source_name) }}
    {%- endif -%}
{% endmacro %}


{#- The Parquet files of the source's glob as one relation, with
    hdh_source_file and file_row_number. -#}
{% macro raw_files(raw, table_name, source_name) -%}
    {%- if execute and env_var('HDH_RAW_ROOT', '') == '' -%}
        {{ exceptions.raise_compiler_error(
            "HDH_RAW_ROOT is not set: it must name the raw tables' root (<private root>/raw).") }}
    {%- endif -%}
    {{ return(adapter.dispatch('raw_files')(raw, table_name, source_name)) }}
{%- endmacro %}

{#- On DuckDB, the files are read under the empty relation of the source's
    columns (UNION ALL BY NAME): a column that no file holds yet (raw files
    loaded before the registry declared it, e.g. a reference column a curated
    dataset gained) reads as NULL, as on Spark, instead of failing the model. -#}
{% macro duckdb__raw_files(raw, table_name, source_name) -%}
    {%- if execute and not raw_files_exist(raw) -%}
        {{ empty_raw_relation(table_name, source_name) }}
    {%- elif not execute -%}
        read_parquet({{ raw.external }}, union_by_name = true,
                     filename = 'hdh_source_file', file_row_number = true)
    {%- else -%}
        (
            select * from {{ empty_raw_relation(table_name, source_name) }}
            union all by name
            select * from read_parquet({{ raw.external }}, union_by_name = true,
                                       filename = 'hdh_source_file', file_row_number = true)
        )
    {%- endif -%}
{%- endmacro %}


{#- Spark fails on a glob that matches nothing and has no SQL to list files, so
    the raw table is an external Parquet table, declared with the source's
    columns (a file lacking one reads it as NULL, like union_by_name), over the
    glob's fixed leading folder read recursively; the glob's remainder filters
    the files by path. An empty or missing folder reads as no row. The table
    (schema hdh_raw, one per model and source table, so models built at once do
    not race) is declared again at every run, so it follows HDH_RAW_ROOT. -#}
{% macro spark__raw_files(raw, table_name, source_name) -%}
    {%- if not execute -%}
        {{ return('(select 1)') }}
    {%- endif -%}
    {%- set node = source_node(table_name, source_name) -%}
    {%- set glob = node.config.get('external_location', '') | replace('{identifier}', node.identifier) -%}
    {%- set parts = glob.split('/') -%}
    {%- set fixed = namespace(count=0) -%}
    {%- for part in parts -%}
        {%- if fixed.count == loop.index0 and '*' not in part and '?' not in part and '[' not in part -%}
            {%- set fixed.count = loop.index -%}
        {%- endif -%}
    {%- endfor -%}
    {%- set folder = parts[:fixed.count] | join('/') -%}
    {%- set pattern = namespace(regex='/' ~ modules.re.escape(parts[fixed.count - 1])) -%}
    {%- for part in parts[fixed.count:] -%}
        {%- set pattern.regex = pattern.regex ~ '/' ~ (modules.re.escape(part) | replace('\\*', '[^/]*') | replace('\\?', '[^/]')) -%}
    {%- endfor -%}
    {%- set table = 'hdh_raw.' ~ model.name ~ '__' ~ source_name ~ '__' ~ table_name -%}
    {%- do run_query('create database if not exists hdh_raw') -%}
    {%- do run_query('drop table if exists ' ~ table) -%}
    {%- set columns = [] -%}
    {%- for column in node.columns.values() -%}
        {%- do columns.append(adapter.quote(column.name) ~ ' ' ~ engine_type(column.data_type)) -%}
    {%- endfor -%}
    {%- do run_query('create table ' ~ table ~ ' (' ~ columns | join(', ') ~ ') using parquet options ('
            ~ "path '" ~ folder ~ "', recursiveFileLookup 'true', pathGlobFilter '*.parquet')") -%}
    (
        select *, _metadata.file_path as hdh_source_file, _metadata.row_index as file_row_number
        from {{ table }}
        where _metadata.file_path rlike '{{ pattern.regex | replace("\\", "\\\\") }}$'
    )
{%- endmacro %}


{#- A column type of the sources' YAML (DuckDB's names) in the engine's SQL. -#}
{% macro engine_type(data_type) -%}
    {{ return(dbt.type_string() if data_type | lower == 'varchar' else data_type) }}
{%- endmacro %}


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
    {%- set listed = run_query('select count(*) from glob(' ~ raw.external ~ ')') -%}
    {{ return(listed.columns[0].values()[0] > 0) }}
{% endmacro %}


{% macro empty_raw_relation(table_name, source_name='raw') %}
    {%- set node = source_node(table_name, source_name) -%}
    (
        select
        {%- for column in node.columns.values() %}
            cast(null as {{ engine_type(column.data_type) }}) as {{ adapter.quote(column.name) }},
        {%- endfor %}
            cast(null as {{ dbt.type_string() }}) as hdh_source_file,
            cast(null as bigint) as file_row_number
        where false
    )
{% endmacro %}
