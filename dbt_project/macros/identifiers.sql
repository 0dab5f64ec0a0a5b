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


{#- The 9 DCIR join columns (the claim key of ER_PRS_F, repeated on each of
    its detail rows), typed from the raw text: one definition for the claims
    and every detail table, so their keys always join. -#}
{% macro dcir_claim_key() -%}
        {{ as_integer('DCT_ORD_NUM') }} as dct_ord_num,
        {{ as_date('FLX_DIS_DTD') }} as flx_dis_dtd,
        {{ as_integer('FLX_EMT_NUM') }} as flx_emt_num,
        {{ as_integer('FLX_EMT_ORD') }} as flx_emt_ord,
        {{ as_integer('FLX_EMT_TYP') }} as flx_emt_typ,
        {{ as_date('FLX_TRT_DTD') }} as flx_trt_dtd,
        {{ as_string('ORG_CLE_NUM') }} as org_cle_num,
        {{ as_integer('PRS_ORD_NUM') }} as prs_ord_num,
        {{ as_integer('REM_TYP_AFF') }} as rem_typ_aff
{%- endmacro %}
