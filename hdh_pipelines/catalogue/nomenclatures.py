"""Code lists behind the variables: SNDS nomenclature tables and the coding systems HealthDCAT-AP names.

The registry's Table Schemas do not carry the SNDS ``nomenclature`` property,
so the supported columns' nomenclatures are listed here (tests compare them
with the SNDS dictionary, ``snds_vars.csv``). Coding systems map to concepts of
the HealthDCAT-AP coding-system vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

CODING_SYSTEM_VOCABULARY = "https://hdeu-dcat.data.health.europa.eu/resource/authority/coding-system"

# Short name -> (concept of the coding-system vocabulary, label shown to people).
CODING_SYSTEMS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "ICD-10": (f"{CODING_SYSTEM_VOCABULARY}/ICD-10", "ICD-10 (CIM-10, French modification)"),
        "ATC": (f"{CODING_SYSTEM_VOCABULARY}/ATC", "ATC (Anatomical Therapeutic Chemical classification)"),
        # CCAM is France's national procedure classification.
        "CCAM": (f"{CODING_SYSTEM_VOCABULARY}/PROC-CODES-NAT", "CCAM (national procedure codes)"),
        "OMOP": (
            f"{CODING_SYSTEM_VOCABULARY}/OHDSI-VOCAB",
            "OHDSI standardised vocabularies (OMOP concepts)",
        ),
    }
)

# SNDS nomenclature table of each supported raw column that has one (from the SNDS dictionary).
SNDS_NOMENCLATURES: Mapping[tuple[str, str], str] = MappingProxyType(
    {
        ("IR_BEN_R", "BEN_RNG_GEM"): "IR_BER_V",
        ("IR_BEN_R", "BEN_CDI_NIR"): "IR_NIR_V",
        ("IR_BEN_R", "BEN_SEX_COD"): "IR_SEX_V",
        ("IR_BEN_R", "BEN_DCD_DTE"): "IR_DTE_V",
        ("IR_BEN_R", "ORG_AFF_BEN"): "IR_ORG_V",
        ("IR_BEN_R", "BEN_RES_DPT"): "IR_DPT_V",
        ("IR_BEN_R", "BEN_RES_COM"): "IR_GEO_V",
        ("IR_BEN_R", "BEN_DTE_INS"): "IR_DTE_V",
        ("IR_BEN_R", "BEN_DTE_MAJ"): "IR_DTE_V",
        ("ER_PRS_F", "FLX_DIS_DTD"): "IR_DTE_V",
        ("ER_PRS_F", "FLX_EMT_NUM"): "IR_NEM_T",
        ("ER_PRS_F", "FLX_EMT_TYP"): "IR_TYT_V",
        ("ER_PRS_F", "FLX_TRT_DTD"): "IR_DTE_V",
        ("ER_PRS_F", "ORG_CLE_NUM"): "IR_ORG_V",
        ("ER_PRS_F", "BEN_RNG_GEM"): "IR_BER_V",
        ("ER_PRS_F", "BEN_SEX_COD"): "IR_SEX_V",
        ("ER_PRS_F", "BEN_RES_DPT"): "IR_DPT_V",
        ("ER_PRS_F", "BEN_RES_COM"): "IR_GEO_V",
        ("ER_PRS_F", "EXE_SOI_DTD"): "IR_DTE_V",
        ("ER_PRS_F", "EXE_SOI_DTF"): "IR_DTE_V",
        ("ER_PRS_F", "PRS_NAT_REF"): "IR_NAT_V",
        ("ER_PRS_F", "BSE_PRS_NAT"): "IR_NAT_V",
        ("ER_PRS_F", "DPN_QLF"): "IR_DEP_V",
        ("ER_PRS_F", "PSE_SPE_COD"): "IR_SPE_V",
        ("ER_PHA_F", "FLX_DIS_DTD"): "IR_DTE_V",
        ("ER_PHA_F", "FLX_EMT_NUM"): "IR_NEM_T",
        ("ER_PHA_F", "FLX_EMT_TYP"): "IR_TYT_V",
        ("ER_PHA_F", "FLX_TRT_DTD"): "IR_DTE_V",
        ("ER_PHA_F", "ORG_CLE_NUM"): "IR_ORG_V",
        ("ER_PHA_F", "PHA_PRS_C13"): "IR_PHA_R",
        ("ER_PHA_F", "PHA_SEQ_RNV"): "IR_SEQ_V",
        ("ER_PHA_F", "PHA_SUB_MTF"): "IR_SUB_V",
        ("ER_CAM_F", "FLX_DIS_DTD"): "IR_DTE_V",
        ("ER_CAM_F", "FLX_EMT_NUM"): "IR_NEM_T",
        ("ER_CAM_F", "FLX_EMT_TYP"): "IR_TYT_V",
        ("ER_CAM_F", "FLX_TRT_DTD"): "IR_DTE_V",
        ("ER_CAM_F", "ORG_CLE_NUM"): "IR_ORG_V",
        ("ER_CAM_F", "ORG_CLE_NEW"): "IR_ORG_V",
        ("ER_CAM_F", "CAM_PRS_IDE"): "IR_CCAM_V63",
        ("ER_CAM_F", "CAM_ACT_COD"): "XC_ATE_V",
        ("ER_CAM_F", "CAM_TRT_PHA"): "XC_PHA_V",
        ("ER_CAM_F", "CAM_ASS_COD"): "IR_ASS_V",
        ("ER_CAM_F", "CAM_RED_MNT"): "IR_FOR_V",
        ("ER_ETE_F", "FLX_DIS_DTD"): "IR_DTE_V",
        ("ER_ETE_F", "FLX_EMT_NUM"): "IR_NEM_T",
        ("ER_ETE_F", "FLX_EMT_TYP"): "IR_TYT_V",
        ("ER_ETE_F", "FLX_TRT_DTD"): "IR_DTE_V",
        ("ER_ETE_F", "ORG_CLE_NUM"): "IR_ORG_V",
        ("ER_ETE_F", "ETE_IND_TAA"): "IR_TAA_V",
        ("T_MCOaaB", "DGN_PAL"): "MS_CIM_V",
        ("T_MCOaaB", "DGN_REL"): "MS_CIM_V",
        ("T_MCOaaB", "ENT_MOD"): "MS_SOR_V",
        ("T_MCOaaB", "ENT_PRV"): "MS_PRV_V",
        ("T_MCOaaB", "SOR_DES"): "MS_PRV_V",
        ("T_MCOaaB", "SOR_MOD"): "MS_SOR_V",
        ("T_MCOaaD", "ASS_DGN"): "MS_CIM_V",
        ("T_MCOaaA", "CDC_ACT"): "IR_CCAM_V63",
        ("T_MCOaaUM", "DGN_PAL"): "MS_CIM_V",
        ("T_MCOaaUM", "DGN_REL"): "MS_CIM_V",
        ("IR_IMB_R", "BEN_RNG_GEM"): "IR_BER_V",
        ("IR_IMB_R", "IMB_ALD_NUM"): "IR_ALD_V",
        ("IR_IMB_R", "IMB_ALD_DTD"): "IR_DTE_V",
        ("IR_IMB_R", "IMB_ALD_DTF"): "IR_DTE_V",
        ("IR_IMB_R", "IMB_ETM_NAT"): "IR_ETM_V",
        ("IR_IMB_R", "MED_MTF_COD"): "IR_CIM_V",
        ("IR_IMB_R", "MED_NCL_IDT"): "IR_NMD_V",
    }
)

# Nomenclatures that are (national versions of) a coding system.
_NOMENCLATURE_CODING_SYSTEMS = {"MS_CIM_V": "ICD-10", "IR_CIM_V": "ICD-10", "IR_CCAM_V63": "CCAM"}

# Warehouse and non-SNDS columns: exact column name -> (nomenclature label, coding system).
_COLUMN_CODES: Mapping[str, tuple[str, str | None]] = MappingProxyType(
    {
        "EVT_DGN": ("CIM-10", "ICD-10"),
        "principal_diagnosis": ("CIM-10", "ICD-10"),
        "related_diagnosis": ("CIM-10", "ICD-10"),
        "icd10_code": ("CIM-10", "ICD-10"),
        "condition_source_value": ("CIM-10", "ICD-10"),
        "atc_code": ("ATC", "ATC"),
        "atc_source_value": ("ATC", "ATC"),
        "atc_class": ("ATC", "ATC"),  # open data: an ATC code cut to a level
        "cip13": ("CIP13 (IR_PHA_R)", None),
        "drug_source_value": ("CIP13 (IR_PHA_R)", None),
        "procedure_source_value": ("CCAM", "CCAM"),
    }
)


def codes_of(dataset: str, column: str) -> tuple[str | None, str | None]:
    """(nomenclature, coding system key) of a column, each None when it has none."""
    snds = SNDS_NOMENCLATURES.get((dataset, column))
    if snds is not None:
        return snds, _NOMENCLATURE_CODING_SYSTEMS.get(snds)
    if column in _COLUMN_CODES:
        return _COLUMN_CODES[column]
    if column.endswith("_concept_id"):
        return "OMOP concept", "OMOP"
    return None, None
