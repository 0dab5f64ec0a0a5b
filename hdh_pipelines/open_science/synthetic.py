"""Synthetic SNDS-like extracts: a small, coherent population to drive demos, tests and benchmarks.

Real SNDS data cannot leave the secure bubble, and the Health Data Hub's own
synthetic tables are random strings that do not join. This generator writes
extracts whose keys do join (claims to the beneficiary referential, pharmacy
details to their claims, PMSI tables to their stays) and whose values are
plausible enough for downstream code to mean something: ICD-10 diagnoses,
acute coronary syndromes followed by secondary-prevention drugs, diabetics
collecting metformin every month, twins sharing a pseudonym, persons known under
two pseudonyms, deaths, opt-outs, and an external hospital cohort whose
pseudonyms are sometimes missing or wrong.

Everything is computed by DuckDB set operations, so millions of rows cost no
Python loop. Randomness comes from hashing (seed, salt, key) rather than from a
random stream, and every row is written in a total order: the same arguments give
the same bytes whatever the number of threads. The CSV layout (columns, their
order, date formats) is read from the dataset registry, so the files are what a
provider delivering those datasets is expected to send: ISO dates where the
schema keeps the default format, the SNDS export formats where it names one
(``ENT_DAT`` as ``%d%m%Y``, ``EXE_SOI_DTD`` of T_MCOaaC as ``%d%b%Y:%H:%M:%S``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import duckdb

from hdh_pipelines.registry import DatasetRegistry, DatasetSchema, Field, default_registry

# SNDS stores an unknown date as this day rather than leaving it empty.
MISSING_DATE = "1600-01-01"
# The FINESS the PMSI carries twice (AP-HP, AP-HM, HCL), as published by the SNDS collaborative
# documentation (fiche "Dépenses des établissements de santé publics", valid up to 2017 inclusive).
FINESS_PMSI_DOUBLONS = Path(__file__).with_name("finess_pmsi_doublons.csv")
_DEFAULT_FORMATS = {"date": "%Y-%m-%d", "datetime": "%Y-%m-%dT%H:%M:%SZ"}


class Drug(NamedTuple):
    """A presentation the synthetic pharmacy delivers; ``atc`` lets demos select drug classes."""

    cip13: str
    atc: str
    label: str
    unit_price: float


def _cip13(stem: str) -> str:
    """Append the EAN-13 check digit, so that code-validity checks accept the synthetic codes."""
    total = sum(int(digit) * (3 if position % 2 else 1) for position, digit in enumerate(stem))
    return stem + str(-total % 10)


# CIP13 codes under the prefix 3400999, not used by real presentations, with real ATC codes.
SYNTHETIC_DRUGS: tuple[Drug, ...] = tuple(
    Drug(_cip13(f"340099900{number:03d}"), atc, label, price)
    for number, (atc, label, price) in enumerate(
        [
            ("N02BE01", "PARACETAMOL 1 G CPR", 2.18),
            ("J01CA04", "AMOXICILLINE 1 G CPR", 3.52),
            ("A02BC01", "OMEPRAZOLE 20 MG GELULE", 4.29),
            ("A10BA02", "METFORMINE 1000 MG CPR", 4.92),
            ("B01AC06", "ACIDE ACETYLSALICYLIQUE 75 MG SACHET", 2.47),
            ("B01AC04", "CLOPIDOGREL 75 MG CPR", 7.85),
            ("C10AA05", "ATORVASTATINE 40 MG CPR", 9.64),
            ("C07AB07", "BISOPROLOL 2,5 MG CPR", 3.41),
            ("C09AA05", "RAMIPRIL 5 MG CPR", 3.86),
        ],
        start=1,
    )
)
# Units per box of each synthetic presentation, in the referential's text form (PHA_UPC_NBR).
_UNITS_PER_BOX = ("8 CPR", "6 CPR", "14 GELULES", "30", "30 SACHETS", "30", "30", "30", "30")
_ACUTE = "[[1], [2], [3], [1, 2], [1, 3]]"  # drug numbers (1-based positions in SYNTHETIC_DRUGS)
_DIABETES = "[4]"
_AFTER_ACS = "[5, 6, 7, 8, 9]"

# Residence: SNDS département (3 chars), commune within it (3 chars), INSEE code,
# postal code (PMSI BDI_COD) and the département whose hospitals treat residents
# (Corsican FINESS numbers start with 2A/2B and do not fit the integer ETA_NUM).
_GEO = [
    ("075", "056", "75056", "75015", 75),
    ("013", "055", "13055", "13005", 13),
    ("069", "123", "69123", "69003", 69),
    ("031", "555", "31555", "31000", 31),
    ("045", "234", "45234", "45000", 45),
    ("044", "109", "44109", "44000", 44),
    ("067", "482", "67482", "67000", 67),
    ("034", "172", "34172", "34000", 34),
    ("033", "063", "33063", "33000", 33),
    ("059", "350", "59350", "59000", 59),
    ("035", "238", "35238", "35000", 35),
    ("051", "454", "51454", "51100", 51),
    ("042", "218", "42218", "42000", 42),
    ("083", "137", "83137", "83000", 83),
    ("076", "351", "76351", "76600", 76),
    ("038", "185", "38185", "38000", 38),
    ("021", "231", "21231", "21000", 21),
    ("049", "007", "49007", "49000", 49),
    ("093", "066", "93066", "93200", 93),
    ("092", "012", "92012", "92100", 92),
    ("057", "463", "57463", "57000", 57),
    ("063", "113", "63113", "63000", 63),
    ("029", "019", "29019", "29200", 29),
    ("080", "021", "80021", "80000", 80),
    ("02A", "004", "2A004", "20000", 13),
    ("02B", "033", "2B033", "20200", 13),
]
# Principal diagnosis -> GHM, GHS of the stays that are not acute coronary syndromes.
_ORDINARY_STAYS = [
    ("J189", "04M053", 4127),
    ("K358", "06C092", 4361),
    ("S720", "08C472", 4786),
    ("I500", "05M092", 4234),
    ("I639", "01M302", 4040),
    ("N390", "11M042", 4570),
    ("C341", "04M102", 4146),
    ("R074", "05M131", 4250),
    ("I251", "05K101", 4198),
    ("E119", "10M022", 4505),
    ("Z511", "28Z07Z", 9606),
    ("I480", "05M072", 4222),
]
_BIRTH_STAY = [("O800", "14Z14A", 5025)]
_ACS_STAYS = [
    ("I210", "05K051", 4183),
    ("I211", "05K051", 4183),
    ("I214", "05M042", 4206),
    ("I219", "05M041", 4205),
    ("I220", "05M042", 4206),
    ("I249", "05M041", 4205),
]
_ASSOCIATED = "['I10', 'E785', 'N183', 'I480', 'I251']"
# ICD-10 labels (CIM-10, French edition) of every code the stays above use: the nomenclature IR_CIM_V
# the generator delivers.
_ICD10_LABELS = {
    "C341": "Tumeur maligne du lobe supérieur, bronches ou poumon",
    "E119": "Diabète sucré de type 2, sans complication",
    "E785": "Hyperlipidémie, sans précision",
    "I10": "Hypertension essentielle (primitive)",
    "I210": "Infarctus transmural aigu du myocarde, de la paroi antérieure",
    "I211": "Infarctus transmural aigu du myocarde, de la paroi inférieure",
    "I214": "Infarctus sous-endocardique aigu du myocarde",
    "I219": "Infarctus aigu du myocarde, sans précision",
    "I220": "Infarctus du myocarde à répétition, de la paroi antérieure",
    "I249": "Cardiopathie ischémique aiguë, sans précision",
    "I251": "Cardiopathie artérioscléreuse",
    "I480": "Fibrillation auriculaire paroxystique",
    "I500": "Insuffisance cardiaque congestive",
    "I639": "Infarctus cérébral, sans précision",
    "J189": "Pneumopathie, sans précision",
    "K358": "Appendicite aiguë, autre et sans précision",
    "N183": "Maladie rénale chronique, stade 3",
    "N390": "Infection des voies urinaires, siège non précisé",
    "O800": "Accouchement spontané par présentation du sommet",
    "R074": "Douleur thoracique, sans précision",
    "S720": "Fracture du col du fémur",
    "Z511": "Séance de chimiothérapie pour tumeur",
}


def _values(rows: list[tuple]) -> str:
    def literal(value: object) -> str:
        return f"'{value}'" if isinstance(value, str) else str(value)

    return ", ".join("(" + ", ".join(literal(v) for v in row) + ")" for row in rows)


def _build_sql(persons: int, year: int, seed: int) -> list[str]:
    """The statements that fill one table per output dataset, columns named and typed as delivered."""
    y = year
    start = f"make_date({y}, 1, 1)"
    return [
        # Uniform draw in [0, 1) for (salt, key, sub-key): hashing keeps every row independent of the others.
        f"CREATE MACRO u(salt, a, b := 0) AS (hash(salt, a, b, {seed}) >> 11)::DOUBLE / 9007199254740992.0",
        "CREATE MACRO pick(choices, x) AS choices[1 + floor(x * len(choices))::INTEGER]",
        f"CREATE MACRO pseudonym(salt, a) AS upper(substr(md5(concat(salt, ':', {seed}, ':', a)), 1, 17))",
        f"CREATE MACRO day_of_year(x) AS {start} + floor(x * 365)::INTEGER",
        f"CREATE TABLE geo AS SELECT * FROM (VALUES {_values(_GEO)}) "
        "g(dpt, com, insee, postal, hospital_dpt)",
        "CREATE TABLE geo_n AS SELECT row_number() OVER (ORDER BY insee) AS geo_id, * FROM geo",
        # The pharmacy dispenses the presentations of the drug referential it delivers (IR_PHA_R), numbered
        # in CIP13 order, which is SYNTHETIC_DRUGS' order.
        "CREATE TABLE drug AS SELECT row_number() OVER (ORDER BY PHA_CIP_C13) AS drug_id, "
        "PHA_CIP_C13::VARCHAR AS cip13, PHA_PRI_UNI::DECIMAL(12, 2) AS unit_price FROM ir_pha_r",
        f"CREATE TABLE dx AS SELECT * FROM (VALUES {_values(_ORDINARY_STAYS + _BIRTH_STAY + _ACS_STAYS)}) "
        "d(dp, ghm, ghs)",
        # Persons. pid % 200 = 1 is the twin of pid - 1 (same family draws, same pseudonym, rank 2);
        # pid % 150 = 3 is also known under a second pseudonym (a change of the holder of rights).
        f"""
        CREATE TABLE person_drawn AS
        WITH base AS (
            SELECT i AS pid,
                   CASE WHEN i % 200 = 1 THEN i - 1 ELSE i END AS fam,
                   CASE WHEN i % 200 = 1 THEN 2 ELSE 1 END AS rng,
                   i % 150 = 3 AS two_psa
            FROM range({persons}) t(i)
        ), drawn AS (
            SELECT *,
                   CASE WHEN fam % 200 = 0 THEN 1 + floor(u('age', fam) * 15)
                        WHEN two_psa THEN 25 + floor(u('age', fam) * 55)
                        ELSE 1 + floor(52 * (u('age', fam) + u('age', fam, 1))) END::INTEGER AS age,
                   CASE WHEN u('sex', fam) < 0.49 THEN 1 ELSE 2 END AS sex,
                   1 + floor(u('month', fam) * 12)::INTEGER AS birth_month,
                   1 + floor(u('geo', fam) * (SELECT count(*) FROM geo))::INTEGER AS geo_id
            FROM base
        ), identified AS (
            SELECT *, (age >= 16 AND (two_psa OR u('top', pid) < 0.97))::INTEGER AS idt_top FROM drawn
        )
        SELECT d.*, g.dpt, g.com, g.insee, g.postal, g.hospital_dpt,
               {y} - d.age AS birth_year,
               '01C' || g.dpt || '000' AS org,
               CASE WHEN u('death', pid) < 0.002 + d.age * 0.0002 THEN day_of_year(u('death_day', pid)) END
                   AS drawn_death,
               CASE WHEN d.idt_top = 1 THEN pseudonym('nir', pid) END AS nir_ano,
               pseudonym('psa', fam) AS psa,
               CASE WHEN d.two_psa THEN pseudonym('psa2', pid) END AS psa2,
               d.age >= 40 AND u('diabetes', pid) < 0.10 AS diabetic,
               d.age >= 45 AND u('acs', pid) < CASE d.sex WHEN 1 THEN 0.04 ELSE 0.02 END AS acs
        FROM identified d JOIN geo_n g USING (geo_id)
        """,
        # Hospital stays ending in the year: up to three ordinary ones, more likely with age,
        # plus one acute coronary syndrome for the persons drawn for it.
        f"""
        CREATE TABLE stay_draw AS
        SELECT pid, k AS slot,
               CASE WHEN sex = 2 AND age BETWEEN 18 AND 45 AND u('birth', pid, k) < 0.4 THEN 'O800'
                    ELSE pick({[d for d, _, _ in _ORDINARY_STAYS]}, u('dp', pid, k)) END AS dp
        FROM person_drawn, range(3) r(k)
        WHERE u('stay', pid, k) < (0.03 + age * 0.002) / (1 + 2 * k)
        UNION ALL
        SELECT pid, 9, pick({[d for d, _, _ in _ACS_STAYS]}, u('dp', pid, 9)) FROM person_drawn WHERE acs
        """,
        """
        CREATE TABLE stay_dated AS
        WITH dated AS (
            SELECT *, left(s.dp, 3) IN ('I21', 'I22', 'I23', 'I24') AS is_acs,
                   day_of_year(u('exit', s.pid, s.slot)) AS exit_date,
                   u('los', s.pid, s.slot) AS x
            FROM stay_draw s JOIN person_drawn p USING (pid)
        ), lengths AS (
            SELECT *, CASE WHEN dp = 'Z511' THEN 0 WHEN dp = 'R074' THEN floor(x * 2)
                           WHEN is_acs THEN 3 + floor(x * 8) ELSE 1 + floor(x * 10) END::INTEGER AS los
            FROM dated
        )
        SELECT * EXCLUDE (x), exit_date - los AS entry_date FROM lengths
        """,
        # Deaths: a small risk growing with age, and a higher one in the months after a coronary
        # stay, sometimes in hospital (the stay then ends on the day of death).
        f"""
        CREATE TABLE person AS
        WITH after_acs AS (
            SELECT pid,
                   min(exit_date + CASE WHEN u('in_hospital', pid, slot) < 0.3 THEN 0
                                        ELSE 1 + floor(u('survival', pid, slot) * 150)::INTEGER END) AS died
            FROM stay_dated WHERE is_acs AND u('acs_death', pid, slot) < 0.12 GROUP BY pid
        )
        SELECT p.* EXCLUDE (drawn_death),
               CASE WHEN least(p.drawn_death, a.died) <= make_date({y}, 12, 31)
                    THEN least(p.drawn_death, a.died) END AS death_date
        FROM person_drawn p LEFT JOIN after_acs a USING (pid)
        """,
        # One referential row per (pseudonym, rank).
        """
        CREATE TABLE ben AS
        SELECT pid, psa, rng, 'first' AS which FROM person
        UNION ALL SELECT pid, psa2, 1, 'second' FROM person WHERE two_psa
        """,
        """
        CREATE TABLE stay AS
        SELECT s.*, p.death_date,
               1000000000 + row_number() OVER (ORDER BY s.pid, s.slot) AS rsa_num,
               s.hospital_dpt * 10000000 + 1000 * (1 + floor(u('eta', s.pid, s.slot) * 3))::INTEGER + 11
                   AS eta_num,
               CASE WHEN s.two_psa AND u('which', s.pid, s.slot) < 0.5 THEN s.psa2 ELSE s.psa END AS stay_psa
        FROM stay_dated s JOIN person p USING (pid)
        WHERE p.death_date IS NULL OR s.exit_date <= p.death_date
        """,
        f"""
        CREATE TABLE das AS
        SELECT eta_num, rsa_num, code, row_number() OVER (PARTITION BY rsa_num ORDER BY src, k) AS num
        FROM (
            SELECT eta_num, rsa_num, 0 AS src, 0 AS k, 'E119' AS code FROM stay WHERE diabetic
            UNION ALL
            SELECT eta_num, rsa_num, 1, k, pick({_ASSOCIATED}, u('das_code', rsa_num, k))
            FROM stay, range(3) r(k) WHERE u('das', rsa_num, k) < 0.3
        )
        """,
        """
        CREATE TABLE t_mco_b AS
        WITH born AS (
            SELECT *, date_diff('day', make_date(birth_year, birth_month, 15), entry_date) AS age_days
            FROM stay
        ), aged AS (
            SELECT *, floor(age_days / 365.25)::INTEGER AS age_years,
                   exit_date IS NOT DISTINCT FROM death_date AS died,
                   u('transfer_out', rsa_num) < 0.05 AS transferred
            FROM born
        )
        SELECT eta_num AS ETA_NUM, rsa_num AS RSA_NUM, sex::VARCHAR AS COD_SEX,
               CASE WHEN age_years >= 1 THEN least(120, age_years) END AS AGE_ANN,
               CASE WHEN age_years < 1 THEN least(365, greatest(0, age_days)) END AS AGE_JOU,
               substr(dpt, 2, 2) AS BDI_DEP, postal AS BDI_COD, aged.dp AS DGN_PAL,
               CASE WHEN aged.dp = 'Z511' THEN 'C341' END AS DGN_REL,
               CASE WHEN u('error', rsa_num) < 0.01 THEN '90Z00Z' ELSE dx.ghm END AS GRG_GHM,
               -- No inter-hospital service (SEJ_TYP B): every stay is its hospital's own.
               'A' AS SEJ_TYP,
               CASE WHEN u('error', rsa_num) >= 0.01 THEN dx.ghs END AS GHS_NUM,
               CASE WHEN u('transfer_in', rsa_num) < 0.05 THEN '7' ELSE '8' END AS ENT_MOD,
               CASE WHEN is_acs OR u('emergency', rsa_num) < 0.3 THEN '5' END AS ENT_PRV,
               CASE WHEN died THEN '9' WHEN transferred THEN '7' ELSE '8' END AS SOR_MOD,
               CASE WHEN transferred AND NOT died THEN '1' END AS SOR_DES,
               CASE WHEN aged.dp <> 'Z511' THEN los END AS SEJ_NBJ,
               coalesce(n.das, 0) AS NBR_DGN,
               (CASE WHEN is_acs THEN 2 ELSE 0 END + floor(u('acts', rsa_num) * 6))::INTEGER AS NBR_ACT,
               CASE WHEN aged.dp = 'Z511' THEN 1 END AS NBR_SEA,
               year(exit_date) AS SOR_ANN, exit_date AS SOR_MOI
        FROM aged JOIN dx ON dx.dp = aged.dp
        LEFT JOIN (SELECT rsa_num, count(*) AS das FROM das GROUP BY rsa_num) n USING (rsa_num)
        """,
        """
        CREATE TABLE t_mco_c AS
        SELECT eta_num AS ETA_NUM, rsa_num AS RSA_NUM, stay_psa AS NIR_ANO_17,
               entry_date::TIMESTAMP AS EXE_SOI_DTD, exit_date::TIMESTAMP AS EXE_SOI_DTF,
               entry_date AS ENT_DAT, exit_date AS SOR_DAT, year(exit_date) AS SOR_ANN, exit_date AS SOR_MOI,
               '0' AS NIR_RET, '0' AS NAI_RET, '0' AS SEX_RET, '0' AS SEJ_RET, '0' AS FHO_RET,
               '0' AS PMS_RET, '0' AS DAT_RET, '0' AS COH_NAI_RET, '0' AS COH_SEX_RET
        FROM stay
        """,
        """
        CREATE TABLE t_mco_d AS
        SELECT eta_num::VARCHAR AS ETA_NUM, rsa_num::VARCHAR AS RSA_NUM, '224' AS RSS_NUM,
               code AS ASS_DGN, num AS DGN_ASS_NUM
        FROM das
        """,
        # Ambulatory care: visits to a GP or a specialist, occasional prescriptions (PHA, 65 %), and
        # fully covered long-term treatments (ALD): a monthly metformin refill for diabetics and
        # secondary prevention for a year after a coronary stay.
        f"""
        CREATE TABLE event_draw AS
        SELECT pid, k AS slot, 'GP' AS kind, day_of_year(u('gp_day', pid, k)) AS care_date,
               NULL::INTEGER[] AS drugs
        FROM person, range(8) r(k) WHERE u('gp', pid, k) < 0.25 + age / 300
        UNION ALL
        SELECT pid, 100 + k, 'SPE', day_of_year(u('spe_day', pid, k)), NULL
        FROM person, range(3) r(k) WHERE u('spe', pid, k) < CASE WHEN diabetic OR acs THEN 0.4 ELSE 0.08 END
        UNION ALL
        SELECT pid, 200 + k, 'PHA', day_of_year(u('pha_day', pid, k)), pick({_ACUTE}, u('pha', pid, k))
        FROM person, range(4) r(k) WHERE u('acute', pid, k) < 0.35
        UNION ALL
        SELECT pid, 300 + m, 'ALD', make_date({y}, m + 1, 1 + floor(u('refill_day', pid, m) * 28)::INTEGER),
               {_DIABETES}
        FROM person, range(12) r(m) WHERE diabetic AND u('refill', pid, m) < 0.85
        UNION ALL
        SELECT pid, 400 + slot * 20 + m, 'ALD', exit_date + (1 + 30 * m)::INTEGER, {_AFTER_ACS}
        FROM stay, range(12) r(m)
        WHERE is_acs AND exit_date + (1 + 30 * m)::INTEGER < make_date({y + 1}, 1, 1)
        """,
        """
        CREATE TABLE event AS
        WITH kept AS (
            SELECT e.*, p.* EXCLUDE (pid) FROM event_draw e JOIN person p USING (pid)
            WHERE p.death_date IS NULL OR e.care_date <= p.death_date
        ), flowed AS (
            SELECT *, (date_trunc('month', care_date)
                       + to_months(1 + (u('late', pid, slot) < 0.2)::INTEGER))::DATE AS flx_dis
            FROM kept
        )
        SELECT *,
               100000000 + row_number() OVER (ORDER BY pid, slot) AS dct_ord_num,
               greatest(care_date, flx_dis - (1 + floor(u('trt', pid, slot) * 10))::INTEGER) AS flx_trt,
               1 + floor(u('emitter', pid, slot) * 20)::INTEGER AS flx_emt_num,
               floor(u('sequence', pid, slot) * 10000)::INTEGER AS flx_emt_ord,
               CASE WHEN two_psa AND u('which', pid, slot) < 0.5 THEN psa2 ELSE psa END AS claim_psa
        FROM flowed
        """,
        # One claim line per visit, one per drug delivered.
        """
        CREATE TABLE claim AS
        SELECT e.*, 1 AS prs_ord_num, NULL::INTEGER AS drug_id, NULL::INTEGER AS boxes
        FROM event e WHERE kind IN ('GP', 'SPE')
        UNION ALL
        SELECT e.*, j + 1, e.drugs[j + 1],
               CASE WHEN kind = 'ALD' AND u('boxes', dct_ord_num, j) < 0.15 THEN 3
                    WHEN kind = 'PHA' AND u('boxes', dct_ord_num, j) < 0.3 THEN 2 ELSE 1 END
        FROM event e JOIN range(10) r(j) ON r.j < len(e.drugs)
        """,
        f"""
        CREATE TABLE er_prs_f AS
        WITH priced AS (
            SELECT c.*, d.unit_price,
                   CASE kind WHEN 'GP' THEN 30.00 WHEN 'SPE' THEN 30.00
                        ELSE d.unit_price * boxes END::DECIMAL(12, 2) AS base,
                   CASE kind WHEN 'GP' THEN 30.00
                        WHEN 'SPE' THEN CASE WHEN u('overrun', dct_ord_num) < 0.4 THEN 50.00 ELSE 30.00 END
                        ELSE d.unit_price * boxes END::DECIMAL(12, 2) AS paid
            FROM claim c LEFT JOIN drug d USING (drug_id)
        )
        SELECT dct_ord_num AS DCT_ORD_NUM, flx_dis AS FLX_DIS_DTD, flx_emt_num AS FLX_EMT_NUM,
               flx_emt_ord AS FLX_EMT_ORD, 1 AS FLX_EMT_TYP, flx_trt AS FLX_TRT_DTD, org AS ORG_CLE_NUM,
               prs_ord_num AS PRS_ORD_NUM, 1 AS REM_TYP_AFF,
               claim_psa AS BEN_NIR_PSA, rng AS BEN_RNG_GEM, sex AS BEN_SEX_COD, birth_year AS BEN_NAI_ANN,
               dpt AS BEN_RES_DPT, com AS BEN_RES_COM,
               care_date AS EXE_SOI_DTD,
               CASE WHEN kind IN ('GP', 'SPE') THEN care_date ELSE DATE '{MISSING_DATE}' END AS EXE_SOI_DTF,
               CASE kind WHEN 'GP' THEN 1111 WHEN 'SPE' THEN 1112 WHEN 'ALD' THEN 3311 ELSE 3313 END
                   AS PRS_NAT_REF,
               PRS_NAT_REF AS BSE_PRS_NAT,
               coalesce(boxes, 1) AS PRS_ACT_QTE, paid AS PRS_PAI_MNT, base AS BSE_REM_BSE,
               CASE kind WHEN 'ALD' THEN base ELSE base * CASE kind WHEN 'PHA' THEN 0.65 ELSE 0.70 END
                   END::DECIMAL(12, 2) AS BSE_REM_MNT,
               CASE WHEN kind = 'SPE' AND u('for_information', dct_ord_num) < 0.05 THEN 71 ELSE 0 END
                   AS DPN_QLF,
               0 AS CPL_MAJ_TOP,
               CASE kind WHEN 'GP' THEN 1
                         WHEN 'SPE' THEN CASE WHEN acs THEN 3 WHEN diabetic THEN 42 WHEN age < 16 THEN 12
                                              ELSE pick([15, 5, 14, 7], u('specialty', dct_ord_num)) END
                         ELSE 0 END AS PSE_SPE_COD,
               drug_id, boxes, slot
        FROM priced
        """,
        """
        CREATE TABLE er_pha_f AS
        SELECT DCT_ORD_NUM, FLX_DIS_DTD, FLX_EMT_NUM, FLX_EMT_ORD, FLX_EMT_TYP, FLX_TRT_DTD, ORG_CLE_NUM,
               PRS_ORD_NUM, REM_TYP_AFF, d.cip13::BIGINT AS PHA_PRS_C13, boxes AS PHA_ACT_QSN,
               d.unit_price::DECIMAL(12, 2) AS PHA_ACT_PRU, 1 AS PHA_ORD_NUM,
               CASE WHEN PRS_NAT_REF = 3311 THEN slot % 3 ELSE 0 END AS PHA_SEQ_RNV, 0 AS PHA_SUB_MTF
        FROM er_prs_f JOIN drug d USING (drug_id)
        """,
        f"""
        CREATE TABLE ir_ben_r AS
        WITH last_claim AS (
            SELECT BEN_NIR_PSA AS psa, BEN_RNG_GEM AS rng, max(FLX_TRT_DTD) AS max_trt
            FROM er_prs_f GROUP BY ALL
        ), rows AS (
            SELECT b.psa, b.rng, p.* EXCLUDE (psa, rng), b.which,
                   least(make_date({y}, 12, 31),
                         greatest(DATE '2006-01-01', make_date(birth_year, birth_month, 1))
                         + floor(u('inserted', pid, b.which) * 400)::INTEGER) AS inserted
            FROM ben b JOIN person p USING (pid)
        )
        SELECT r.psa AS BEN_NIR_PSA, r.rng AS BEN_RNG_GEM, nir_ano AS BEN_NIR_ANO,
               CASE WHEN idt_top = 1 THEN nir_ano ELSE r.psa || r.rng END AS BEN_IDT_ANO,
               idt_top AS BEN_IDT_TOP, '00' AS BEN_CDI_NIR, sex AS BEN_SEX_COD, birth_year AS BEN_NAI_ANN,
               make_date(birth_year, birth_month, 1) AS BEN_NAI_MOI, dpt AS BEN_RES_DPT, com AS BEN_RES_COM,
               coalesce(death_date, DATE '{MISSING_DATE}') AS BEN_DCD_DTE, org AS ORG_AFF_BEN,
               inserted AS BEN_DTE_INS,
               greatest(inserted, make_date({y}, 12, 31) - floor(u('updated', pid, r.which) * 300)::INTEGER)
                   AS BEN_DTE_MAJ,
               coalesce(l.max_trt, DATE '{MISSING_DATE}') AS MAX_TRT_DTD
        FROM rows r LEFT JOIN last_claim l ON l.psa = r.psa AND l.rng = r.rng
        """,
        # A few opt-outs, among them deliberately a rank-2 twin and a second pseudonym, the two
        # cases where filtering on the wrong key lets a person through or excludes the wrong one.
        """
        CREATE TABLE opt_out AS
        WITH chosen AS (
            SELECT b.*, day_of_year(u('opt_day', b.pid, b.which))
                        - 365 * floor(u('opt_year', b.pid) * 3)::INTEGER AS opted
            FROM ben b
            WHERE u('opt_out', b.pid, b.which) < 0.006
               OR (b.pid = 1 AND b.rng = 2) OR (b.pid = 3 AND b.which = 'second')
        )
        SELECT psa AS BEN_NIR_PSA, rng AS BEN_RNG_GEM, opted AS OPT_OUT_DTE,
               CASE WHEN u('withdrawn', pid) < 0.15 THEN opted + 30 + floor(u('kept', pid) * 200)::INTEGER END
                   AS OPT_END_DTE,
               pick(['ALL', 'ALL', 'ALL', 'RESEARCH', 'LINKAGE'], u('scope', pid)) AS OPT_SCOPE,
               CASE WHEN u('withdrawn', pid) < 0.15 THEN 'WITHDRAWN' ELSE 'ACTIVE' END AS OPT_STATUS
        FROM chosen
        """,
        # The hospital's coronary cohort: one record per patient, first coronary stay. Its pseudonym
        # is missing for 15 % and mistyped for 5 %; quasi-identifiers carry a little noise too.
        """
        CREATE TABLE cohort_ext AS
        WITH first_acs AS (
            SELECT * FROM stay WHERE is_acs
            QUALIFY row_number() OVER (PARTITION BY pid ORDER BY entry_date, rsa_num) = 1
        )
        SELECT 'CHU-' || lpad(row_number() OVER (ORDER BY rsa_num)::VARCHAR, 6, '0') AS COH_REC_ID,
               CASE WHEN u('cohort_id', pid) < 0.15 THEN NULL
                    WHEN u('cohort_id', pid) < 0.20 THEN
                        substr(stay_psa, 1, 8) || CASE WHEN substr(stay_psa, 9, 1) = '0' THEN '1' ELSE '0' END
                        || substr(stay_psa, 10)
                    ELSE stay_psa END AS BEN_NIR_PSA,
               birth_year + CASE WHEN u('year_typo', pid) < 0.03 THEN 1 ELSE 0 END AS NAI_ANN,
               CASE WHEN u('month_missing', pid) >= 0.05 THEN birth_month END AS NAI_MOI,
               sex AS SEX_COD, substr(dpt, 2, 2) AS RES_DPT, insee AS RES_COM,
               entry_date AS INC_DTE, death_date AS DCD_DTE, dp AS EVT_DGN,
               1 + floor(pow(u('killip', pid), 2) * 4)::INTEGER AS EVT_KILLIP
        FROM first_acs
        """,
    ]


def _referential_sql(schema: DatasetSchema, table: str, values: dict[str, list[object]]) -> str:
    """A referential table with every column of its registry schema: ``values`` by column, NULL elsewhere."""
    rows = list(zip(*values.values(), strict=True))
    given = ", ".join(values)
    columns = ", ".join(
        f'"{f.name}"' if f.name in values else f'NULL::{f.duckdb_type()} AS "{f.name}"' for f in schema.fields
    )
    return f"CREATE TABLE {table} AS SELECT {columns} FROM (VALUES {_values(rows)}) v({given})"


def _referentials_sql(registry: DatasetRegistry) -> list[str]:
    """The drug referential IR_PHA_R of SYNTHETIC_DRUGS and the ICD-10 nomenclature IR_CIM_V of the stays."""
    drugs = {
        "PHA_CIP_C13": [int(d.cip13) for d in SYNTHETIC_DRUGS],
        "PHA_PRS_IDE": [int(d.cip13[5:12]) for d in SYNTHETIC_DRUGS],
        "PHA_MED_NOM": [d.label for d in SYNTHETIC_DRUGS],
        "PHA_PRI_UNI": [f"{d.unit_price:.2f}" for d in SYNTHETIC_DRUGS],
        "PHA_CND_TOP": ["PC"] * len(SYNTHETIC_DRUGS),
        "PHA_ATC_C07": [d.atc for d in SYNTHETIC_DRUGS],
        "PHA_ATC_C03": [d.atc[:3] for d in SYNTHETIC_DRUGS],
        "PHA_UPC_NBR": list(_UNITS_PER_BOX),
    }
    codes = sorted(_ICD10_LABELS)
    diagnoses = {
        "CIM_COD": codes,
        "CIM_LIB": [_ICD10_LABELS[code] for code in codes],
        "CAT_CIM_COD": [code[:3] for code in codes],
        "VER_CPT_COD": ["V8.0"] * len(codes),
        "TEC_COL": [0] * len(codes),
    }
    return [
        _referential_sql(registry.resolve("IR_PHA_R"), "ir_pha_r", drugs),
        _referential_sql(registry.resolve("IR_CIM_V"), "ir_cim_v", diagnoses),
    ]


def _render(field: Field) -> str:
    """The CSV text of a column: dates in the registry's format (ISO 8601 unless it names another)."""
    column = '"' + field.name.replace('"', '""') + '"'
    if field.type in _DEFAULT_FORMATS:
        pattern = (field.format or _DEFAULT_FORMATS[field.type]).replace("'", "''")
        return f"strftime({column}, '{pattern}') AS {column}"
    return f"CAST({column} AS VARCHAR) AS {column}"


def _export(connection: duckdb.DuckDBPyConnection, table: str, schema: DatasetSchema, path: Path) -> None:
    # A curated dataset's own columns, not those its overlay adds from the reference: the synthetic files
    # are the column subsets a project's extract is, which the contract loads (docs/registry.md).
    produced = {row[0] for row in connection.execute(f"DESCRIBE {table}").fetchall()}
    missing = [f.name for f in schema.own_fields if f.name not in produced]
    if missing:
        raise ValueError(
            f"The registry's {schema.name} declares columns the generator does not produce: "
            f"{', '.join(missing)}."
        )
    columns = ", ".join(_render(f) for f in schema.own_fields)
    target = str(path).replace("'", "''")
    connection.execute(
        f"COPY (SELECT {columns} FROM {table} ORDER BY ALL) TO '{target}' (FORMAT csv, HEADER, DELIMITER ';')"
    )


def generate_snds(
    out_dir: Path,
    *,
    persons: int = 2000,
    year: int = 2025,
    seed: int = 42,
    registry: DatasetRegistry | None = None,
) -> dict[str, Path]:
    """Write one ``<dataset>.csv`` per dataset into ``out_dir``; return dataset name -> path.

    Datasets: IR_BEN_R, ER_PRS_F, ER_PHA_F, T_MCO{yy}B/C/D (``yy`` from ``year``), OPT_OUT,
    COHORT_EXT, the two referentials IR_PHA_R (the drugs the pharmacy dispenses) and IR_CIM_V
    (the ICD-10 codes of the stays), and the referential FINESS_PMSI_DOUBLONS (the published list,
    not drawn). Files are ``;``-separated UTF-8 with a header row of exactly the registry's own columns
    (``DatasetSchema.own_fields``: a curated dataset's hand-written ones),
    and byte-identical for the same arguments. ``registry`` defaults to the packaged one.
    """
    if persons < 1:
        raise ValueError("persons must be at least 1.")
    if not 2000 <= year <= 2099:
        raise ValueError("year must lie in 2000-2099: PMSI table names carry two digits of it.")
    registry = registry or default_registry()
    yy = f"{year % 100:02d}"
    outputs = {
        "IR_BEN_R": "ir_ben_r",
        "ER_PRS_F": "er_prs_f",
        "ER_PHA_F": "er_pha_f",
        f"T_MCO{yy}B": "t_mco_b",
        f"T_MCO{yy}C": "t_mco_c",
        f"T_MCO{yy}D": "t_mco_d",
        "OPT_OUT": "opt_out",
        "COHORT_EXT": "cohort_ext",
        "IR_PHA_R": "ir_pha_r",
        "IR_CIM_V": "ir_cim_v",
        "FINESS_PMSI_DOUBLONS": "finess_pmsi_doublons",
    }
    schemas = {}
    for dataset in outputs:
        schema = registry.resolve(dataset)
        if schema is None:
            raise ValueError(f"The dataset registry does not know {dataset}.")
        schemas[dataset] = schema
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    with duckdb.connect() as connection:
        connection.execute("SET enable_progress_bar = false")
        for statement in [*_referentials_sql(registry), *_build_sql(persons, year, seed)]:
            connection.execute(statement)
        # Not drawn: the published list of FINESS transmitted twice, delivered as it is.
        connection.execute(
            "CREATE TABLE finess_pmsi_doublons AS "
            "SELECT * FROM read_csv(?, delim = ';', header = true, all_varchar = true)",
            [str(FINESS_PMSI_DOUBLONS)],
        )
        for dataset, table in outputs.items():
            paths[dataset] = out_dir / f"{dataset}.csv"
            _export(connection, table, schemas[dataset], paths[dataset])
    return paths
