-- The ICD-10 nomenclature (CIM-10), typed: one row per code (CIM_COD, no
-- dot, as the PMSI writes it), the version from the delivery loaded last; a
-- code a later delivery leaves out keeps its last label.

with delivered as (
    select * from {{ raw_rows('ir_cim_v') }}
),

typed as (
    select
        {{ as_string('CIM_COD') }} as cim_cod,
        {{ as_string('CIM_LIB') }} as cim_lib,
        {{ as_integer('ALD_030_COD') }} as ald_030_cod,
        {{ as_string('CAT_CIM_COD') }} as cat_cim_cod,
        {{ as_string('VER_CPT_COD') }} as ver_cpt_cod,
        {{ as_string('VER_CPT_DTE') }} as ver_cpt_dte,
        {{ as_string('CAT_TUM_COD') }} as cat_tum_cod,
        {{ as_integer('TEC_COL') }} as tec_col,
        {{ delivery_lineage() }}
    from delivered
)

select {{ columns_except(['hdh_source_file', 'file_row_number']) }}
from typed
qualify row_number() over (
    partition by cim_cod
    order by {{ latest_delivery_first() }}
) = 1
