{#- Typing of the raw text, one macro per registry type (Table Schema).

    Raw columns hold the delivered text; an empty value is already NULL. Casts
    are strict on purpose: only deliveries that passed the blocking quality
    checks reach the raw tables, so a value that does not fit its declared type
    is a broken contract and fails the build instead of turning into a silent
    NULL. -#}

{#- Codes and identifiers: surrounding spaces removed; all-blank becomes NULL. -#}
{% macro as_string(column) -%}
    nullif(trim({{ column }}), '')
{%- endmacro %}

{% macro as_integer(column) -%}
    {{ strict_cast(as_string(column), 'bigint', column) }}
{%- endmacro %}

{% macro as_number(column) -%}
    {{ strict_cast(as_string(column), 'double', column) }}
{%- endmacro %}

{% macro as_year(column) -%}
    {{ strict_cast(as_string(column), 'integer', column) }}
{%- endmacro %}

{#- The SNDS writes flags as 0/1, which DuckDB and Spark read as false/true. -#}
{% macro as_boolean(column) -%}
    {{ strict_cast(as_string(column), 'boolean', column) }}
{%- endmacro %}

{#- A "date" whose registry format is %m holds a month alone (BEN_NAI_MOI,
    SOR_MOI): it is kept as the month number, 1 to 12, not as a made-up day. -#}
{% macro as_month(column) -%}
    {{ strict_cast(as_string(column), 'integer', column) }}
{%- endmacro %}

{#- Dates: ISO 8601 unless the registry names a strptime format (parse_timestamp). The SNDS
    stores an unknown date as 1600-01-01; it becomes NULL. -#}
{% macro as_date(column, format=none) -%}
    {%- if format is none -%}
        nullif({{ strict_cast(as_string(column), 'date', column) }}, date '{{ snds_missing_date() }}')
    {%- else -%}
        nullif(cast({{ parse_timestamp(as_string(column), format, column) }} as date), date '{{ snds_missing_date() }}')
    {%- endif -%}
{%- endmacro %}

{#- Date-times: any time on the missing-date day is missing too. -#}
{% macro as_datetime(column, format=none) -%}
    {%- set parsed -%}
        {%- if format is none -%}
            {{ strict_cast(as_string(column), 'timestamp', column) }}
        {%- else -%}
            {{ parse_timestamp(as_string(column), format, column) }}
        {%- endif -%}
    {%- endset -%}
    case when cast({{ parsed }} as date) <> date '{{ snds_missing_date() }}' then {{ parsed }} end
{%- endmacro %}

{% macro snds_missing_date() -%}
    1600-01-01
{%- endmacro %}

{#- The PMSI ships one table per year (T_MCO25B for 2025, T_MCO25UM for its
    medical units) and numbers its stays (RSA_NUM) within a year, so the year,
    read from the delivered table name, is part of a stay's key. -#}
{% macro pmsi_year() -%}
    2000 + cast(regexp_extract(hdh_dataset, '^T_MCO([0-9]{2})[A-Z]+$', 1) as integer)
{%- endmacro %}
