{#- A BIGINT identifier computed from a business key, for the OMOP tables'
    integer ids: the same key gives the same id in every run and partition,
    with no sequence to keep. 63 bits of the key's MD5; the unique tests on
    every id would catch a collision (macros/engine.sql, md5_bigint). -#}
{% macro surrogate_id(parts) -%}
    {%- set key -%}
        concat_ws('|', {%- for part in parts %} cast({{ part }} as {{ dbt.type_string() }}){{ ',' if not loop.last }}{% endfor %})
    {%- endset -%}
    {{ md5_bigint(key) }}
{%- endmacro %}


{#- The 9 DCIR join columns: the claim key of ER_PRS_F, repeated on each of
    its detail rows (ER_PHA_F, ER_CAM_F, ER_ETE_F…). Every join and window on a
    claim lists them from here: {{ dcir_claim_key_columns() | join(', ') }}. -#}
{% macro dcir_claim_key_columns() -%}
    {{ return([
        'dct_ord_num', 'flx_dis_dtd', 'flx_emt_num', 'flx_emt_ord', 'flx_emt_typ',
        'flx_trt_dtd', 'org_cle_num', 'prs_ord_num', 'rem_typ_aff',
    ]) }}
{%- endmacro %}


{#- The 9 DCIR join columns typed from the raw text (two dates, the
    organisation code as text, integers otherwise): one typing for the claims
    and every detail table, so their keys always join. -#}
{% macro dcir_claim_key() -%}
    {%- set typing = {'flx_dis_dtd': as_date, 'flx_trt_dtd': as_date, 'org_cle_num': as_string} -%}
    {%- for column in dcir_claim_key_columns() %}
        {{ typing.get(column, as_integer)(column | upper) }} as {{ column }}{{ ',' if not loop.last }}
    {%- endfor %}
{%- endmacro %}


{#- The latest delivered version of each DCIR claim, as the qualify clause of
    a DCIR staging model (macros/delivery_order.sql says which delivery wins).
    one_row_per_claim: ER_PRS_F and ER_ETE_F hold one row per claim key, the
    last one in file order within the winning delivery; otherwise (a detail
    table of several lines per claim, ER_PHA_F, ER_CAM_F) every line of the
    latest delivery that holds lines for the claim, so a re-delivered claim
    with fewer lines does not keep the old extra ones. -#}
{% macro latest_dcir_claim_delivery(one_row_per_claim) -%}
qualify {{ 'row_number' if one_row_per_claim else 'rank' }}() over (
    partition by {{ dcir_claim_key_columns() | join(', ') }}
    order by {{ latest_delivery_first(within_delivery=one_row_per_claim) }}
) = 1
{%- endmacro %}


{#- The PMSI stay key typed from the raw text: the PMSI year (from the
    table's name), ETA_NUM as text (a FINESS number, 2A/2B in Corsica) and
    RSA_NUM, a zero-padded 10-digit index, as an integer: one typing in every
    PMSI table, so that the stay key is the same everywhere. -#}
{% macro pmsi_stay_key() -%}
        {{ pmsi_year() }} as pmsi_year,
        {{ as_string('ETA_NUM') }} as eta_num,
        {{ as_integer('RSA_NUM') }} as rsa_num
{%- endmacro %}


{#- The latest delivered version of each PMSI stay, as the qualify clause of a
    PMSI staging model (macros/delivery_order.sql says which delivery wins).
    one_row_per_stay: T_MCOaaB and T_MCOaaC hold one row per stay, the last
    one in file order within the winning delivery; otherwise (a detail table
    of several rows per stay: acts, diagnoses, units) every row of the latest
    delivery that holds rows for the stay, replaced as a set. -#}
{% macro latest_pmsi_stay_delivery(one_row_per_stay) -%}
qualify {{ 'row_number' if one_row_per_stay else 'rank' }}() over (
    partition by pmsi_year, eta_num, rsa_num
    order by {{ latest_delivery_first(within_delivery=one_row_per_stay) }}
) = 1
{%- endmacro %}
