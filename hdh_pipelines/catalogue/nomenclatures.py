"""Code lists behind the variables: SNDS nomenclature tables and the coding systems HealthDCAT-AP names.

A raw column's SNDS nomenclature is the registry's (``Field.nomenclature``, from
schema-snds or written on a curated column; tests compare the curated ones with
the SNDS dictionary, ``snds_vars.csv``); warehouse columns that hold codes are
listed here. Coding systems map to concepts of the HealthDCAT-AP coding-system
vocabulary.
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


def codes_of(column: str, nomenclature: str | None = None) -> tuple[str | None, str | None]:
    """(nomenclature, coding system key) of a column, each None when it has none.

    ``nomenclature`` is a registered raw column's (``IR_SEX_V`` or schema-snds's ``IR_SEX_V:SEX_COD``,
    the code list and its code column): the code list is named.
    """
    if nomenclature:
        code_list = nomenclature.split(":", 1)[0]
        return code_list, _NOMENCLATURE_CODING_SYSTEMS.get(code_list)
    if column in _COLUMN_CODES:
        return _COLUMN_CODES[column]
    if column.endswith("_concept_id"):
        return "OMOP concept", "OMOP"
    return None, None
