{#- The engine-specific SQL of the project, one macro per construct, with a
    DuckDB (duckdb__) and a Spark (spark__) implementation chosen by
    adapter.dispatch. Models and the rule macros call these and dbt's
    cross-database macros (dbt.type_string…) only, so the same project builds
    the same rows on either engine (tests/test_dbt_engines.py). -#}


{#- Every column of the relation in scope but the named ones. -#}
{% macro columns_except(columns) -%}
    {{ return(adapter.dispatch('columns_except')(columns)) }}
{%- endmacro %}

{% macro duckdb__columns_except(columns) -%}
    * exclude ({{ columns | join(', ') }})
{%- endmacro %}

{% macro spark__columns_except(columns) -%}
    * except ({{ columns | join(', ') }})
{%- endmacro %}


{#- A cast that fails the build on a value that does not fit, on both engines.
    DuckDB's cast is strict; dbt-spark turns Spark's ANSI mode off (lenient
    casts give NULL), so on Spark a non-NULL value whose try_cast is NULL
    raises an error naming the column, never the value. -#}
{% macro strict_cast(expression, data_type, label) -%}
    {{ return(adapter.dispatch('strict_cast')(expression, data_type, label)) }}
{%- endmacro %}

{% macro duckdb__strict_cast(expression, data_type, label) -%}
    cast({{ expression }} as {{ data_type }})
{%- endmacro %}

{% macro spark__strict_cast(expression, data_type, label) -%}
    case
        when {{ expression }} is not null and try_cast({{ expression }} as {{ data_type }}) is null
            then raise_error('{{ label }}: a delivered value does not fit the type {{ data_type }}')
        else try_cast({{ expression }} as {{ data_type }})
    end
{%- endmacro %}


{#- A timestamp parsed with a strptime format (the registry's notation). Spark
    takes Java's DateTimeFormatter patterns: the directives the registry uses
    are translated, any other stops the build. -#}
{% macro parse_timestamp(expression, format, label) -%}
    {{ return(adapter.dispatch('parse_timestamp')(expression, format, label)) }}
{%- endmacro %}

{% macro duckdb__parse_timestamp(expression, format, label) -%}
    strptime({{ expression }}, '{{ format }}')
{%- endmacro %}

{% macro spark__parse_timestamp(expression, format, label) -%}
    {%- set directives = {'%d': 'dd', '%m': 'MM', '%b': 'MMM', '%Y': 'yyyy', '%H': 'HH', '%M': 'mm', '%S': 'ss'} -%}
    {%- set pattern = namespace(text=format) -%}
    {%- for directive, java in directives.items() -%}
        {%- set pattern.text = pattern.text | replace(directive, java) -%}
    {%- endfor -%}
    {%- if '%' in pattern.text -%}
        {{ exceptions.raise_compiler_error("The date format " ~ format ~ " has a directive the Spark macros do not translate.") }}
    {%- endif -%}
    {{ strict_cast("to_timestamp(" ~ expression ~ ", '" ~ pattern.text ~ "')", 'timestamp', label) }}
{%- endmacro %}


{#- 63 bits of the MD5 of a text, as a BIGINT: DuckDB's md5_number_lower (the
    last 8 bytes of the digest, read little-endian) shifted right by one. Spark
    reads the same bytes from the hexadecimal digest, in reverse order. -#}
{% macro md5_bigint(text) -%}
    {{ return(adapter.dispatch('md5_bigint')(text)) }}
{%- endmacro %}

{% macro duckdb__md5_bigint(text) -%}
    cast(md5_number_lower({{ text }}) >> 1 as bigint)
{%- endmacro %}

{% macro spark__md5_bigint(text) -%}
    cast(cast(conv(concat(
        {%- for position in range(31, 15, -2) %}substr(md5({{ text }}), {{ position }}, 2){{ ', ' if not loop.last }}{% endfor -%}
    ), 16, 10) as decimal(20, 0)) div 2 as bigint)
{%- endmacro %}


{#- The distinct values of a text column joined by a separator, sorted. -#}
{% macro sorted_distinct_join(column, separator) -%}
    {{ return(adapter.dispatch('sorted_distinct_join')(column, separator)) }}
{%- endmacro %}

{% macro duckdb__sorted_distinct_join(column, separator) -%}
    string_agg(distinct {{ column }}, '{{ separator }}' order by {{ column }})
{%- endmacro %}

{% macro spark__sorted_distinct_join(column, separator) -%}
    array_join(array_sort(collect_set({{ column }})), '{{ separator }}')
{%- endmacro %}


{#- Hook body that removes the rows of a table matching a predicate on its
    rows (aliased `alias`). DuckDB deletes them. Spark's Parquet tables have no
    DELETE: the partitions holding such rows are copied without them into a
    scratch table, dropped, and written back; the statements run while the hook
    renders, which then renders empty. -#}
{% macro remove_rows(relation, alias, predicate) -%}
    {{ return(adapter.dispatch('remove_rows')(relation, alias, predicate)) }}
{%- endmacro %}

{% macro duckdb__remove_rows(relation, alias, predicate) -%}
    delete from {{ relation }} as {{ alias }}
    where {{ predicate }}
{%- endmacro %}

{% macro spark__remove_rows(relation, alias, predicate) -%}
    {%- if execute -%}
        {%- set partition_column = config.require('partition_by') -%}
        {%- set touched = run_query(
            'select distinct cast(' ~ partition_column ~ ' as string) from ' ~ relation ~ ' as ' ~ alias
            ~ ' where ' ~ predicate).columns[0].values() -%}
        {%- if touched | length > 0 -%}
            {%- set scratch = relation.incorporate(path={'identifier': relation.identifier ~ '__hdh_rewrite'}) -%}
            {%- set partitions -%}
                {%- for value in touched -%}partition ({{ partition_column }} = '{{ value }}'){{ ', ' if not loop.last }}{%- endfor -%}
            {%- endset -%}
            {%- do run_query('drop table if exists ' ~ scratch) -%}
            {%- do run_query(
                'create table ' ~ scratch ~ ' using parquet as select * from ' ~ relation ~ ' as ' ~ alias
                ~ ' where cast(' ~ partition_column ~ ' as string) in (\'' ~ (touched | join("', '")) ~ '\')'
                ~ ' and not coalesce((' ~ predicate ~ '), false)') -%}
            {%- do run_query('alter table ' ~ relation ~ ' drop if exists ' ~ partitions) -%}
            {%- do run_query('insert into ' ~ relation ~ ' select * from ' ~ scratch) -%}
            {%- do run_query('drop table if exists ' ~ scratch) -%}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}


{#- The config of a model partitioned by month of `column` (macros/partitions.sql):
    DuckDB deletes and inserts the range (strategy replace_range); Spark
    partitions the Parquet table by the column, drops the range's partitions
    (pre-hook clear_partition_range) and overwrites the partitions of the new
    rows (insert_overwrite). -#}
{% macro monthly_partitions(column) -%}
    {%- if target.type == 'spark' -%}
        {{ return({'incremental_strategy': 'insert_overwrite', 'partition_by': column,
                   'partition_date_column': column}) }}
    {%- endif -%}
    {{ return({'incremental_strategy': 'replace_range', 'partition_date_column': column}) }}
{%- endmacro %}


{#- Pre-hook of every model: on Spark, in a partitioned run of a partitioned
    model that exists already, drop the partitions of the range, so that a key
    that vanished from the source leaves the table as with replace_range. -#}
{% macro clear_partition_range() -%}
    {{ return(adapter.dispatch('clear_partition_range')()) }}
{%- endmacro %}

{% macro duckdb__clear_partition_range() -%}
{%- endmacro %}

{% macro spark__clear_partition_range() -%}
    {%- set column = config.get('partition_by') -%}
    {%- if execute and column and model.config.materialized == 'incremental' and is_partitioned_run()
            and load_relation(this) is not none -%}
        {%- do remove_rows(this, 'kept', in_partition('kept.' ~ column)) -%}
    {%- endif -%}
{%- endmacro %}
