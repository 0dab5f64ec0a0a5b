{#- Which delivered version of a business key wins: the delivery loaded last
    (hdh_loaded_at), then the greater delivery id, then the greater provider id
    so that the order is total. Within one delivery (within_delivery=true) a
    key delivered twice keeps its last row in file order. -#}
{% macro latest_delivery_first(within_delivery=true) -%}
    hdh_loaded_at desc, hdh_delivery_id desc, hdh_provider desc
    {%- if within_delivery %}, hdh_source_file desc, file_row_number desc{% endif %}
{%- endmacro %}


{#- The delivery columns every typed staging relation carries along from
    raw_rows(): which delivery a row came from (for latest_delivery_first). -#}
{% macro delivery_columns() -%}
        hdh_provider,
        hdh_delivery_id,
        hdh_dataset,
        hdh_loaded_at
{%- endmacro %}


{#- delivery_columns() and the row's place in its file, for the staging
    models that keep one row per key within a delivery (within_delivery). -#}
{% macro delivery_lineage() -%}
        {{ delivery_columns() }},
        hdh_source_file,
        file_row_number
{%- endmacro %}
