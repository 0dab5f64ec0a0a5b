{#- Opt-outs (int_opt_out_exclusions holds every pseudonym of every person with
    an active opt-out). Marts filter their rows with these predicates. -#}

{#- True when the pseudonym (with its twin rank when known: the PMSI has none)
    belongs to a person who opted out. -#}
{% macro is_opted_out(psa_column, rng_column=none) -%}
    exists (
        select 1
        from {{ ref('int_opt_out_exclusions') }} as opted_out
        where opted_out.ben_nir_psa = {{ psa_column }}
        {%- if rng_column is not none %}
            and opted_out.ben_rng_gem = {{ rng_column }}
        {%- endif %}
    )
{%- endmacro %}


{#- Post-hook of the partitioned marts: a partitioned run rewrites one month,
    but a person who opted out since the other months were built must leave
    them too. Rendered empty in whole builds, which select no such row. -#}
{% macro purge_opted_out(psa_column, rng_column=none) -%}
    {%- if is_partitioned_run() -%}
        {{ remove_rows(this, 'kept', is_opted_out('kept.' ~ psa_column, none if rng_column is none else 'kept.' ~ rng_column)) }}
    {%- endif -%}
{%- endmacro %}
