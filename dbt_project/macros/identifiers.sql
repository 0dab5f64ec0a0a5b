{#- A BIGINT identifier computed from a business key, for the OMOP tables'
    integer ids: the same key gives the same id in every run and partition,
    with no sequence to keep. 63 bits of the key's MD5; the unique tests on
    every id would catch a collision. -#}
{% macro surrogate_id(parts) -%}
    cast(md5_number_lower(concat_ws('|', {%- for part in parts %} cast({{ part }} as varchar){{ ',' if not loop.last }}{% endfor %})) >> 1 as bigint)
{%- endmacro %}
