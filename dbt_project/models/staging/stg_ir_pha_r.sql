-- The drug referential, typed: one row per CIP13 presentation (PHA_CIP_C13),
-- the version from the delivery loaded last. A referential delivery is a
-- snapshot, but a code a later snapshot leaves out keeps its last version:
-- dispensations of a withdrawn presentation still need their ATC class.

with delivered as (
    select * from {{ raw_rows('ir_pha_r') }}
),

typed as (
    select
        {{ as_integer('PHA_CIP_C13') }} as pha_cip_c13,
        {{ as_integer('PHA_PRS_IDE') }} as pha_prs_ide,
        {{ as_integer('PHA_CIP_UCD') }} as pha_cip_ucd,
        {{ as_string('PHA_MED_NAT') }} as pha_med_nat,
        {{ as_string('PHA_MED_NOM') }} as pha_med_nom,
        {{ as_string('PHA_PPC_IND') }} as pha_ppc_ind,
        {{ as_integer('PHA_INS_DTD') }} as pha_ins_dtd,
        {{ as_integer('PHA_INS_DTF') }} as pha_ins_dtf,
        {{ as_string('PHA_MTF_VAL') }} as pha_mtf_val,
        {{ as_integer('PHA_LIS_IND') }} as pha_lis_ind,
        {{ as_integer('PHA_FRM_COD') }} as pha_frm_cod,
        {{ as_string('PHA_FRM_LIB') }} as pha_frm_lib,
        {{ as_integer('PHA_FRC_COD') }} as pha_frc_cod,
        {{ as_string('PHA_FRC_LIB') }} as pha_frc_lib,
        {{ as_string('PHA_LAB_NOM') }} as pha_lab_nom,
        {{ as_string('PHA_PRD_LIB1') }} as pha_prd_lib1,
        {{ as_string('PHA_PRD_LIB2') }} as pha_prd_lib2,
        {{ as_integer('PHA_DER_MAJ') }} as pha_der_maj,
        {{ as_integer('PHA_MAX_QTS') }} as pha_max_qts,
        {{ as_integer('PHA_MAX_QTR') }} as pha_max_qtr,
        {{ as_string('PHA_PRE_IND') }} as pha_pre_ind,
        {{ as_string('PHA_MEX_IND') }} as pha_mex_ind,
        {{ as_string('PHA_MED_SPE') }} as pha_med_spe,
        {{ as_string('PHA_SEX_DTD') }} as pha_sex_dtd,
        {{ as_integer('PHA_MED_SEX') }} as pha_med_sex,
        {{ as_string('PHA_AGE_DTD') }} as pha_age_dtd,
        {{ as_string('PHA_AGE_MIN') }} as pha_age_min,
        {{ as_string('PHA_AGE_MAX') }} as pha_age_max,
        {{ as_integer('PHA_MED_IMG') }} as pha_med_img,
        {{ as_string('PHA_MED_GEN') }} as pha_med_gen,
        {{ as_string('PHA_PCP_DTD') }} as pha_pcp_dtd,
        {{ as_string('PHA_MED_PCP') }} as pha_med_pcp,
        {{ as_string('PHA_MED_PIH') }} as pha_med_pih,
        {{ as_string('PHA_DTD_ALM') }} as pha_dtd_alm,
        {{ as_string('PHA_DTF_ALM') }} as pha_dtf_alm,
        {{ as_string('PHA_IND_SUI') }} as pha_ind_sui,
        {{ as_string('PHA_TAR_DAT') }} as pha_tar_dat,
        {{ as_string('PHA_PRI_UNI') }} as pha_pri_uni,
        {{ as_string('PHA_PRI_UND') }} as pha_pri_und,
        {{ as_string('PHA_TAU_COD') }} as pha_tau_cod,
        {{ as_string('PHA_RGE_C07') }} as pha_rge_c07,
        {{ as_string('PHA_RGE_C13') }} as pha_rge_c13,
        {{ as_string('PHA_GRS_NUM') }} as pha_grs_num,
        {{ as_string('PHA_GRS_NOM') }} as pha_grs_nom,
        {{ as_string('PHA_NOM_PA') }} as pha_nom_pa,
        {{ as_string('PHA_MED_COM') }} as pha_med_com,
        {{ as_string('PHA_NOM_COURT') }} as pha_nom_court,
        {{ as_string('PHA_EPH_COD') }} as pha_eph_cod,
        {{ as_string('PHA_EPH_LIB_DSES') }} as pha_eph_lib_dses,
        {{ as_string('PHA_MED_GEN_DPROD') }} as pha_med_gen_dprod,
        {{ as_string('PHA_CNV_TOP_DSES') }} as pha_cnv_top_dses,
        {{ as_string('PHA_GRS_DSD') }} as pha_grs_dsd,
        {{ as_string('PHA_HTA_TOP') }} as pha_hta_top,
        {{ as_string('PHA_CND_TOP') }} as pha_cnd_top,
        {{ as_string('PHA_DOS_PRA_DSES') }} as pha_dos_pra_dses,
        {{ as_string('PHA_DOS_UNT_DSES') }} as pha_dos_unt_dses,
        {{ as_string('PHA_UNT_NBR_DSES') }} as pha_unt_nbr_dses,
        {{ as_string('PHA_ATC_C07') }} as pha_atc_c07,
        {{ as_string('PHA_ATC_L07') }} as pha_atc_l07,
        {{ as_string('PHA_ATC_C03') }} as pha_atc_c03,
        {{ as_string('PHA_ATC_L03') }} as pha_atc_l03,
        {{ as_number('PHA_AST_TOP') }} as pha_ast_top,
        {{ as_number('PHA_CAR_TOP') }} as pha_car_top,
        {{ as_string('PHA_DAT_OPP') }} as pha_dat_opp,
        {{ as_number('PHA_DIA_TOP') }} as pha_dia_top,
        {{ as_string('PHA_GRD_CND') }} as pha_grd_cnd,
        {{ as_number('PHA_HDD_SPE') }} as pha_hdd_spe,
        {{ as_number('PHA_PRD_UND') }} as pha_prd_und,
        {{ as_number('PHA_PRD_UNI') }} as pha_prd_uni,
        {{ as_string('PHA_ATC_CLA') }} as pha_atc_cla,
        {{ as_string('PHA_ATC_LIB') }} as pha_atc_lib,
        {{ as_string('PHA_DOS_UNI') }} as pha_dos_uni,
        {{ as_string('PHA_EPH_CLA') }} as pha_eph_cla,
        {{ as_string('PHA_EPH_LIB') }} as pha_eph_lib,
        {{ as_string('PHA_SUB_DOS') }} as pha_sub_dos,
        {{ as_string('PHA_UPC_NBR') }} as pha_upc_nbr,
        {{ delivery_lineage() }}
    from delivered
)

select {{ columns_except(['hdh_source_file', 'file_row_number']) }}
from typed
qualify row_number() over (
    partition by pha_cip_c13
    order by {{ latest_delivery_first() }}
) = 1
