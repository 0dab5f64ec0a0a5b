-- Analysis-ready drug dispensations: one row per dispensing (person, day,
-- CIP13) with its net boxes once regularisations are netted, made of the
-- countable lines only (no line for information only, macros/dcir_rules.sql),
-- except those of persons who opted out or whose lines lack their claim. The
-- claim key is the one of the dispensing's first line. A regularisation
-- arrives in a later flow: the post-hooks correct the earlier month's row.
{{ config(
    materialized='incremental',
    full_refresh=not is_partitioned_run(),
    post_hook=[
        "{{ delete_renetted_dispensings() }}",
        "{{ insert_renetted_dispensings() }}",
        "{{ purge_opted_out('ben_nir_psa', 'ben_rng_gem') }}",
    ],
    tags=['hdh_partitioned'],
    **monthly_partitions('flx_dis_dtd')
) }}

{{ drug_dispensation_rows() }}
