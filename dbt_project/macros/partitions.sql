{#- Monthly partitions of the large tables, driven by Dagster.

    Contract: the environment variables HDH_PARTITION_START and
    HDH_PARTITION_END are ISO dates (YYYY-MM-DD), end exclusive, set both or
    neither (empty is unset). With them, the models
    tagged hdh_partitioned replace the rows whose partition date column falls
    in [start, end) and leave every other row alone (incremental strategy
    replace_range); the other models are rebuilt whole as always. Without them,
    every model is rebuilt whole. A range of several months gives the same rows
    as the months run one by one. dbt's own microbatch strategy was measured and
    not adopted (it loses rows a whole build must keep, and costs more):
    docs/normalisation.md, "Why not dbt's microbatch". Environment variables
    rather than vars: a new --vars makes dbt parse the whole project again, a
    changed environment variable only the files that read it. -#}

{#- (start, end) as ISO strings, or none for a whole build. -#}
{% macro partition_range() %}
    {%- set start = env_var('HDH_PARTITION_START', '') or none -%}
    {%- set end = env_var('HDH_PARTITION_END', '') or none -%}
    {%- if start is none and end is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- if start is none or end is none -%}
        {{ exceptions.raise_compiler_error(
            "HDH_PARTITION_START and HDH_PARTITION_END go together: got start=" ~ start ~ ", end=" ~ end ~ ".") }}
    {%- endif -%}
    {%- set bounds = [] -%}
    {%- for value in [start, end] -%}
        {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', value | string) -%}
            {{ exceptions.raise_compiler_error("Partition bound " ~ value ~ " is not an ISO date (YYYY-MM-DD).") }}
        {%- endif -%}
        {%- do bounds.append(modules.datetime.date.fromisoformat(value | string)) -%}
    {%- endfor -%}
    {%- if bounds[0] >= bounds[1] -%}
        {{ exceptions.raise_compiler_error(
            "The partition range is empty: start " ~ bounds[0] ~ " is not before end " ~ bounds[1] ~ ".") }}
    {%- endif -%}
    {{ return((bounds[0].isoformat(), bounds[1].isoformat())) }}
{% endmacro %}


{% macro is_partitioned_run() %}
    {{ return(partition_range() is not none) }}
{% endmacro %}


{#- The rows of the current partition: a predicate on the model's partition
    date column (always true in a whole build). -#}
{% macro in_partition(column) -%}
    {%- set bounds = partition_range() -%}
    {%- if bounds is none -%}
        true
    {%- else -%}
        ({{ column }} >= date '{{ bounds[0] }}' and {{ column }} < date '{{ bounds[1] }}')
    {%- endif -%}
{%- endmacro %}


{#- Incremental strategy replace_range: delete the target's rows of the
    partition, then insert the new ones. Unlike delete+insert on a unique key,
    this also removes rows whose key vanished from the source, so re-running a
    partition always leaves exactly what a whole build would hold for it. -#}
{% macro get_incremental_replace_range_sql(arg_dict) %}
    {%- if not is_partitioned_run() -%}
        {{ exceptions.raise_compiler_error("replace_range runs only with HDH_PARTITION_START and HDH_PARTITION_END set.") }}
    {%- endif -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    delete from {{ arg_dict['target_relation'] }}
    where {{ in_partition(config.require('partition_date_column')) }};

    insert into {{ arg_dict['target_relation'] }} ({{ columns }})
    select {{ columns }} from {{ arg_dict['temp_relation'] }}
{% endmacro %}
