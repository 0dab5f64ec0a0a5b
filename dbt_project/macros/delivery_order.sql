{#- Which delivered version of a business key wins: the delivery loaded last
    (hdh_loaded_at), then the greater delivery id, then the greater provider id
    so that the order is total. Within one delivery (within_delivery=true) a
    key delivered twice keeps its last row in file order. -#}
{% macro latest_delivery_first(within_delivery=true) -%}
    hdh_loaded_at desc, hdh_delivery_id desc, hdh_provider desc
    {%- if within_delivery %}, hdh_source_file desc, file_row_number desc{% endif %}
{%- endmacro %}
