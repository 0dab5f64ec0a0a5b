{#- The SNDS rules the community applies to the PMSI MCO before counting
    stays or linking them to persons (docs/normalisation.md#snds-rules). Each
    is defined here once and gives a status, never a NULL a later comparison
    would silently drop. -#}

{#- What GENRSA made of the stay (GRG_GHM):
    - error: CMD 90, "erreurs et autres séjours inclassables", excluded by
      every reference (Documentation-SNDS fiche "Requête type dans le
      PMSI-MCO", "L'essentiel du SNDS"; SCALPEL-Extraction
      McoFilters.filterMcoCorruptedHospitalStays);
    - missing: no GHM delivered; the stay is kept and says so;
    - grouped otherwise. -#}
{% macro ghm_status(grg_ghm) -%}
    case
        when {{ grg_ghm }} is null then 'missing'
        when {{ grg_ghm }} like '90%' then 'error'
        else 'grouped'
    end
{%- endmacro %}


{#- A session (séance: dialysis, chemotherapy, radiotherapy…): GHM of CMD 28
    (Documentation-SNDS glossary CMD). Counted as a stay but flagged, since a
    patient has one per session. -#}
{% macro is_session_ghm(grg_ghm) -%}
    coalesce({{ grg_ghm }} like '28%', false)
{%- endmacro %}


{#- An inter-hospital service (SEJ_TYP = B, prestation inter-établissements)
    repeats a stay the requesting hospital also sends, except sessions of
    CMD 28 other than 28Z14Z, 28Z15Z, 28Z16Z (SCALPEL-Extraction
    McoFilters.filterSharedHospitalStays; Documentation-SNDS fiche
    "SCALPEL" and "L'essentiel du SNDS", solution 2). -#}
{% macro is_inter_hospital_duplicate(sej_typ, grg_ghm) -%}
    (
        coalesce({{ sej_typ }} = 'B', false)
        and not (
            {{ is_session_ghm(grg_ghm) }}
            and {{ grg_ghm }} not in ('28Z14Z', '28Z15Z', '28Z16Z')
        )
    )
{%- endmacro %}


{#- Whether T_MCOaaC's pseudonym can be trusted to chain the stay to a
    person. Every return code the year's format carries must be delivered and
    0 (Documentation-SNDS fiche "Requête type dans le PMSI-MCO", CR_OK: NIR,
    NAI, SEX, SEJ, FHO, PMS, DAT from 2006, COH_NAI and COH_SEX from 2013;
    "L'essentiel du SNDS"; SCALPEL-Extraction filterMcoCorruptedHospitalStays),
    and the pseudonym must not be one of the fictitious values the CNAM lists
    ("L'essentiel du SNDS": xxxxxxxxxxxxxxxxx, XXXXXXXXXXXXXXXXS). A missing code
    is not a valid one. Statuses: no_pseudonym, fictitious_pseudonym,
    missing_return_code, invalid_return_code, valid. The boolean codes of the
    registry (NIR_RET…) read 0 as false; NAI_RET and DAT_RET are text. -#}
{% macro pmsi_chaining_status(pmsi_year) -%}
    {%- set boolean_codes = ['nir_ret', 'sex_ret', 'sej_ret', 'fho_ret', 'pms_ret'] -%}
    {%- set text_codes = ['nai_ret'] -%}
    case
        when nir_ano_17 is null then 'no_pseudonym'
        when upper(nir_ano_17) in ('XXXXXXXXXXXXXXXXX', 'XXXXXXXXXXXXXXXXS') then 'fictitious_pseudonym'
        when {% for code in boolean_codes + text_codes %}{{ code }} is null or {% endfor -%}
            ({{ pmsi_year }} >= 2006 and dat_ret is null)
            or ({{ pmsi_year }} >= 2013 and (coh_nai_ret is null or coh_sex_ret is null))
            then 'missing_return_code'
        when {% for code in boolean_codes %}{{ code }} or {% endfor -%}
            nai_ret <> '0'
            or coalesce(dat_ret <> '0', false)
            or coalesce(coh_nai_ret, false)
            or coalesce(coh_sex_ret, false)
            then 'invalid_return_code'
        else 'valid'
    end
{%- endmacro %}


{#- An RSA that GENRSA generated automatically rather than from a stay
    (TYP_GEN_RSA <> 0: dialysis, external activity of salaried doctors,
    FFM, ATU and SE billed by the hospital), left out of the stays counted:
    Documentation-SNDS "L'essentiel du SNDS" (PMSI cleaning filter 3,
    TYP_GEN_RSA = '0') and fiche "Dépenses des établissements de santé
    publics" (filter on TYP_GEN_RSA, "qui n'est disponible qu'à partir de
    2015"). So a NULL — a year before 2015, or a delivery without the column —
    is not flagged: the rule cannot drop stays that predate its variable. -#}
{% macro is_generated_rsa(typ_gen_rsa) -%}
    coalesce({{ typ_gen_rsa }} <> 0, false)
{%- endmacro %}


{#- A stay grouped in GHS 9999, which the national insurance does not
    reimburse: left out of the stays counted (SCALPEL-Extraction
    McoFilters.filterNonReimbursedStays, GHS_NUM =!= "9999", applied by
    McoSource.sanitize; Documentation-SNDS fiche "SCALPEL": "GHS_NUM ≠ 9999,
    supprime les séjours hospitaliers non remboursés"). A NULL (GHS not
    delivered) is not flagged: it does not show the stay is unreimbursed, as a
    missing GHM is a status and not an error (ghm_status); SCALPEL's Spark
    comparison drops NULLs only as a side effect of SQL's three-valued logic. -#}
{% macro is_non_reimbursed_ghs(ghs_num) -%}
    coalesce({{ ghs_num }} = 9999, false)
{%- endmacro %}
