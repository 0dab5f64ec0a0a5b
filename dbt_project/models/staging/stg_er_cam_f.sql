-- DCIR CCAM detail (ER_CAM_F), typed: the CCAM act lines of each claim, taken
-- from the latest delivery that holds lines for that claim, so a re-delivered
-- claim with fewer lines does not keep the old extra ones. ER_CAM_F carries no
-- quantity of its own: an act's is PRS_ACT_QTE of its ER_PRS_F line
-- (Documentation-SNDS, fiche "Tables affinées"). Partitioned like its claims,
-- by month of FLX_DIS_DTD (part of the claim key).
{{ config(
    materialized='incremental',
    full_refresh=not is_partitioned_run(),
    tags=['hdh_partitioned'],
    **monthly_partitions('flx_dis_dtd')
) }}

with delivered as (
    select * from {{ raw_rows('er_cam_f') }}
),

typed as (
    select
        {{ dcir_claim_key() }},
        {{ as_integer('CAM_ORD_NUM') }} as cam_ord_num,
        {{ as_string('CAM_PRS_IDE') }} as cam_prs_ide,
        {{ as_string('CAM_ACT_COD') }} as cam_act_cod,
        {{ as_integer('CAM_TRT_PHA') }} as cam_trt_pha,
        {{ as_string('CAM_MOD_COD') }} as cam_mod_cod,
        {{ as_string('CAM_ASS_COD') }} as cam_ass_cod,
        {{ as_string('CAM_QUA_DEN') }} as cam_qua_den,
        {{ as_string('CAM_DOC_EXT') }} as cam_doc_ext,
        {{ as_string('CAM_REM_COD') }} as cam_rem_cod,
        {{ as_string('CAM_CAB_IND') }} as cam_cab_ind,
        {{ as_string('CAM_GRI_TAR') }} as cam_gri_tar,
        {{ as_string('ORG_CLE_NEW') }} as org_cle_new,
        {{ as_number('CAM_ACT_PRU') }} as cam_act_pru,
        {{ as_number('CAM_REM_BSE') }} as cam_rem_bse,
        {{ as_number('CAM_SUP_MNT') }} as cam_sup_mnt,
        {{ as_number('CAM_NRM_MNT') }} as cam_nrm_mnt,
        {{ as_number('CAM_RED_MNT') }} as cam_red_mnt,
        {{ as_number('CAM_MPU_MNT') }} as cam_mpu_mnt,
        {{ as_number('CAM_MM1_MNT') }} as cam_mm1_mnt,
        {{ as_number('CAM_MM2_MNT') }} as cam_mm2_mnt,
        {{ as_number('CAM_MM3_MNT') }} as cam_mm3_mnt,
        {{ as_number('CAM_MM4_MNT') }} as cam_mm4_mnt,
        {{ as_number('CAM_MI1_MNT') }} as cam_mi1_mnt,
        {{ as_number('CAM_MI2_MNT') }} as cam_mi2_mnt,
        {{ as_number('CAM_MI3_MNT') }} as cam_mi3_mnt,
        {{ as_number('CAM_MI4_MNT') }} as cam_mi4_mnt,
        {{ delivery_columns() }}
    from delivered
)

select *
from typed
where {{ in_partition('flx_dis_dtd') }}
{{ latest_dcir_claim_delivery(one_row_per_claim=false) }}
