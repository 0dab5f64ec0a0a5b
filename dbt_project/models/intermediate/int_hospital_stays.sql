-- The PMSI MCO stays to count, month by month: the stays of int_pmsi_stays the
-- SNDS rules retain (stay_status = 'retained': no duplicate FINESS, no
-- inter-hospital duplicate, no error GHM of CMD 90), with their dates, GHM
-- status and person. Partitioned by month of stay start.
{{ config(
    materialized='incremental',
    full_refresh=not is_partitioned_run(),
    tags=['hdh_partitioned'],
    **monthly_partitions('stay_start_date')
) }}

select *
from {{ ref('int_pmsi_stays') }}
where stay_status = 'retained'
    and {{ in_partition('stay_start_date') }}
