{#- None of the columns is NULL (one test for a whole composite key). -#}
{% test all_not_null(model, columns) %}
    select *
    from {{ model }}
    where {% for column in columns %}{{ column }} is null{{ ' or ' if not loop.last }}{% endfor %}
{% endtest %}
