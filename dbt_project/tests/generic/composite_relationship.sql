{#- Every row whose key columns are all set finds a row of `to` with the same
    values in `to_columns` (default: the same names): a foreign key of several
    columns, which dbt's relationships test does not cover. -#}
{% test composite_relationship(model, columns, to, to_columns=none) %}
    {%- set parent_columns = to_columns or columns -%}
    select child.*
    from {{ model }} as child
    where {% for column in columns %}child.{{ column }} is not null and {% endfor %}not exists (
        select 1
        from {{ to }} as parent
        where {% for column in columns %}parent.{{ parent_columns[loop.index0] }} = child.{{ column }}{{ ' and ' if not loop.last }}{% endfor %}
    )
{% endtest %}
