"""Linkage test data with known truth: a population, and a cohort sampled from it with planted errors.

The population has the columns of the dbt models the linkage reads
(``intermediate.int_pseudonym_persons``, ``marts.persons``,
``staging.stg_cohort_ext``), so tests and the benchmark feed the real code
path. Draws are numpy vectors and the tables are assembled in DuckDB SQL: no
Python loop over rows, 1 M persons in a few seconds.

What makes it realistic enough to measure a linkage:

- residence is concentrated (département and commune weights follow a Zipf
  law), so quasi-identifiers collide as they do in a real population;
- twins share a pseudonym (rank 2, same sex and birth), some persons are known
  under two pseudonyms, a few opted out (in the referential, not in
  ``marts.persons``: they must not be linked);
- cohort errors are planted independently at ``error_rate`` each: pseudonym
  missing, pseudonym wrong (half a typo that names nobody, half another
  person's), birth month off by one, sex flipped, commune replaced by a
  neighbour, département typo; plus records of people absent from the
  population (``no_match_rate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from hdh_pipelines.linkage.storage import OUTPUT_TABLES

PROVIDER = "chu-test"
TRUTH_TABLE = "linkage_truth.cohort_truth"
_REFERENCE_YEAR = 2025
_COMMUNES_PER_DEPARTEMENT = 300
_COMMUNES_PER_OVERSEAS_DEPARTEMENT = 30
_MAINLAND = [f"{i:02d}" for i in range(1, 96) if i != 20] + ["2A", "2B"]
_OVERSEAS = ["971", "972", "973", "974", "976"]


@dataclass(frozen=True)
class LinkageTestSpec:
    """What to generate. Rates are probabilities per record (errors) or per person."""

    persons: int
    cohort: int
    error_rate: float
    no_match_rate: float = 0.02
    twin_rate: float = 0.005
    second_pseudonym_rate: float = 0.03
    opt_out_rate: float = 0.002
    death_rate: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.persons < 10 or self.cohort < 1:
            raise ValueError("A test population needs at least 10 persons and 1 cohort record.")
        if self.cohort * (1 - self.no_match_rate) > self.persons:
            raise ValueError("The cohort cannot hold more matched records than there are persons.")
        rates = (
            self.error_rate,
            self.no_match_rate,
            self.twin_rate,
            self.second_pseudonym_rate,
            self.opt_out_rate,
            self.death_rate,
        )
        if not all(0 <= rate <= 1 for rate in rates) or self.error_rate > 0.5:
            raise ValueError("Rates must lie in [0, 1] (error_rate in [0, 0.5]).")


def _geography() -> pa.Table:
    """One row per commune: SNDS coding (3 + 3 characters) and INSEE coding (département, 5-char commune)."""
    dpt_insee, dpt_snds, com_snds, com_insee, dpt_index, com_index = [], [], [], [], [], []
    for d, code in enumerate(_MAINLAND + _OVERSEAS):
        overseas = code in _OVERSEAS
        count = _COMMUNES_PER_OVERSEAS_DEPARTEMENT if overseas else _COMMUNES_PER_DEPARTEMENT
        for c in range(1, count + 1):
            # Overseas communes are 97 + 3 digits whose first is the département's last (97101);
            # the SNDS writes the département on three characters and keeps those 3 digits.
            com = f"{code[2]}{c:02d}" if overseas else f"{c:03d}"
            dpt_insee.append(code)
            dpt_snds.append(code if overseas else f"0{code}")
            com_snds.append(com)
            com_insee.append(("97" if overseas else code) + com)
            dpt_index.append(d)
            com_index.append(c - 1)
    return pa.table(
        {
            "geo_id": pa.array(range(len(dpt_insee)), pa.int32()),
            "dpt_index": pa.array(dpt_index, pa.int32()),
            "com_index": pa.array(com_index, pa.int32()),
            "dpt_insee": dpt_insee,
            "dpt_snds": dpt_snds,
            "com_snds": com_snds,
            "com_insee": com_insee,
        }
    )


def _zipf(count: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1) ** exponent
    return weights / weights.sum()


def _draw_geo(rng: np.random.Generator, geo: pa.Table, size: int) -> np.ndarray:
    """Residence of ``size`` people: départements and communes concentrated as real ones are."""
    dpt_count = len(_MAINLAND) + len(_OVERSEAS)
    dpt_weights = rng.permutation(_zipf(dpt_count, 0.7))
    dpt = rng.choice(dpt_count, size=size, p=dpt_weights)
    first_geo = np.searchsorted(geo["dpt_index"].to_numpy(), np.arange(dpt_count))
    sizes = np.bincount(geo["dpt_index"].to_numpy(), minlength=dpt_count)
    # Inverse-CDF draw of a Zipf rank, scaled to each département's commune count.
    cdf = np.cumsum(_zipf(_COMMUNES_PER_DEPARTEMENT, 1.0))
    rank = np.searchsorted(cdf, rng.random(size) * cdf[-1])
    return first_geo[dpt] + np.minimum(rank * sizes[dpt] // _COMMUNES_PER_DEPARTEMENT, sizes[dpt] - 1)


def _draw_people(
    rng: np.random.Generator, geo: pa.Table, size: int, death_rate: float
) -> dict[str, np.ndarray]:
    age = 1 + np.floor(52 * (rng.random(size) + rng.random(size))).astype(np.int32)
    dead = rng.random(size) < death_rate
    return {
        "sex": np.where(rng.random(size) < 0.49, 1, 2).astype(np.int32),
        "birth_year": (_REFERENCE_YEAR - age).astype(np.int32),
        "birth_month": rng.integers(1, 13, size, dtype=np.int32),
        "geo_id": _draw_geo(rng, geo, size).astype(np.int32),
        # Days after 2024-01-01; NULL when alive.
        "death_day": np.where(dead, rng.integers(30, 700, size), -1).astype(np.int32),
    }


def _population(spec: LinkageTestSpec, rng: np.random.Generator, geo: pa.Table) -> pa.Table:
    n = spec.persons
    people = _draw_people(rng, geo, n, spec.death_rate)
    pid = np.arange(n, dtype=np.int64)
    # A twin is the next person of a chosen one: same birth, sex and home, same pseudonym, rank 2.
    twin = np.zeros(n, dtype=bool)
    chosen = rng.choice(n - 1, size=int(spec.twin_rate * n), replace=False) + 1
    twin[chosen] = True
    twin[0] = False
    family = np.where(twin, pid - 1, pid)
    family = family[family]  # a twin of a twin belongs to the first one's family
    for column in ("sex", "birth_year", "birth_month", "geo_id"):
        people[column] = people[column][family]
    return pa.table(
        {
            "pid": pid,
            "family": family,
            "rng_gem": np.where(twin, 2, 1).astype(np.int32),
            **people,
            "second_pseudonym": (rng.random(n) < spec.second_pseudonym_rate) & ~twin,
            "opted_out": rng.random(n) < spec.opt_out_rate,
            "has_own_nir": rng.random(n) < 0.9,
        }
    )


def _cohort(spec: LinkageTestSpec, rng: np.random.Generator, geo: pa.Table) -> pa.Table:
    matched = round(spec.cohort * (1 - spec.no_match_rate))
    outsiders = spec.cohort - matched
    e = spec.error_rate
    size = spec.cohort
    id_draw = rng.random(size)
    return pa.table(
        {
            "rec": np.arange(size, dtype=np.int64),
            # -1 for someone the population does not hold; the outsiders' attributes are drawn afresh.
            "pid": np.concatenate([rng.choice(spec.persons, matched, replace=False), np.full(outsiders, -1)]),
            **{f"outsider_{k}": v for k, v in _draw_people(rng, geo, size, spec.death_rate).items()},
            "id_state": np.select(
                [id_draw < e, id_draw < 1.5 * e, id_draw < 2 * e], ["missing", "typo", "other"], "right"
            ),
            "other_pid": rng.integers(0, spec.persons, size),
            "use_second_pseudonym": rng.random(size) < 0.5,
            "month_shift": np.where(rng.random(size) < e, 1, 0).astype(np.int32),
            "sex_flip": rng.random(size) < e,
            "commune_shift": np.where(rng.random(size) < e, 1, 0).astype(np.int32),
            "dpt_typo": rng.random(size) < e,
            "death_known": rng.random(size) < 0.8,
            "inclusion_lead": rng.integers(1, 400, size).astype(np.int32),
            "inclusion_day": rng.integers(0, 700, size).astype(np.int32),
        }
    )


_ASSEMBLY = f"""
CREATE OR REPLACE MACRO psa(seed, pid) AS upper(substr(md5('psa:' || seed || ':' || pid), 1, 17));
CREATE OR REPLACE MACRO psa2(seed, pid) AS upper(substr(md5('psa2:' || seed || ':' || pid), 1, 17));
CREATE OR REPLACE MACRO nir_ano(seed, pid) AS upper(substr(md5('nir:' || seed || ':' || pid), 1, 17));
CREATE OR REPLACE MACRO day(d) AS CASE WHEN d >= 0 THEN DATE '2024-01-01' + d::INTEGER END;
CREATE SCHEMA IF NOT EXISTS intermediate;
CREATE SCHEMA IF NOT EXISTS marts;
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS linkage_truth;
CREATE OR REPLACE TEMP TABLE person AS
SELECT p.*, g.dpt_snds, g.com_snds,
       CASE WHEN has_own_nir OR second_pseudonym THEN nir_ano($seed, pid)
            ELSE psa($seed, family) || rng_gem::VARCHAR END AS ben_idt_ano
FROM population p JOIN geo g USING (geo_id);
CREATE OR REPLACE TABLE intermediate.int_pseudonym_persons AS
WITH pseudonyms AS (
    SELECT *, psa($seed, family) AS ben_nir_psa, rng_gem AS ben_rng_gem FROM person
    UNION ALL
    SELECT *, psa2($seed, pid), 1 FROM person WHERE second_pseudonym
)
SELECT ben_nir_psa, ben_rng_gem, ben_idt_ano, ben_idt_ano AS delivered_ben_idt_ano,
       (has_own_nir OR second_pseudonym) AS ben_idt_top,
       CASE WHEN has_own_nir OR second_pseudonym THEN nir_ano($seed, pid) END AS ben_nir_ano,
       sex AS ben_sex_cod, birth_year AS ben_nai_ann, birth_month AS ben_nai_moi,
       dpt_snds AS ben_res_dpt, com_snds AS ben_res_com, day(death_day) AS ben_dcd_dte,
       DATE '2010-01-01' AS ben_dte_ins, DATE '{_REFERENCE_YEAR}-12-31' AS ben_dte_maj
FROM pseudonyms;
CREATE OR REPLACE TABLE intermediate.int_opt_out_exclusions AS
SELECT ben_nir_psa, ben_rng_gem, ben_idt_ano FROM intermediate.int_pseudonym_persons
WHERE ben_idt_ano IN (SELECT ben_idt_ano FROM person WHERE opted_out);
CREATE OR REPLACE TABLE staging.stg_opt_out AS
SELECT ben_nir_psa, ben_rng_gem, DATE '2025-01-01' AS opt_out_dte, CAST(NULL AS DATE) AS opt_end_dte,
       'ALL' AS opt_scope, 'ACTIVE' AS opt_status, 'cnam' AS hdh_provider, 'opt-out-1' AS hdh_delivery_id,
       TIMESTAMP '2026-01-05 10:00:00' AS hdh_loaded_at
FROM intermediate.int_opt_out_exclusions;
CREATE OR REPLACE TABLE marts.persons AS
SELECT ben_idt_ano, sex AS sex_code, birth_year, birth_month, day(death_day) AS death_date,
       dpt_snds AS residence_departement, com_snds AS residence_commune,
       1 + second_pseudonym::INTEGER AS pseudonym_count
FROM person WHERE NOT opted_out;
CREATE OR REPLACE TEMP TABLE cohort_person AS
SELECT c.*,
       coalesce(p.sex, c.outsider_sex) AS sex,
       coalesce(p.birth_year, c.outsider_birth_year) AS birth_year,
       coalesce(p.birth_month, c.outsider_birth_month) AS birth_month,
       coalesce(p.geo_id, c.outsider_geo_id) AS geo_id,
       CASE WHEN p.pid IS NOT NULL THEN p.death_day ELSE c.outsider_death_day END AS death_day,
       CASE WHEN p.pid IS NULL THEN NULL
            WHEN p.second_pseudonym AND c.use_second_pseudonym THEN psa2($seed, p.pid)
            ELSE psa($seed, p.family) END AS right_psa,
       p.ben_idt_ano, p.opted_out
FROM cohort c LEFT JOIN person p USING (pid);
CREATE OR REPLACE TABLE staging.stg_cohort_ext AS
WITH noisy AS (
    SELECT c.*, g.dpt_index, g.com_index,
           (SELECT count(*) FROM geo g2 WHERE g2.dpt_index = g.dpt_index) AS communes
    FROM cohort_person c JOIN geo g USING (geo_id)
), placed AS (
    SELECT n.*, moved.com_insee AS res_com, typo.dpt_insee AS res_dpt
    FROM noisy n
    JOIN geo moved ON moved.dpt_index = n.dpt_index
         AND moved.com_index = CASE WHEN n.com_index + n.commune_shift < n.communes
                                    THEN n.com_index + n.commune_shift ELSE n.com_index - 1 END
    JOIN geo typo ON typo.com_index = 0
         AND typo.dpt_index = CASE WHEN NOT n.dpt_typo THEN n.dpt_index
                                   WHEN n.dpt_index = 0 THEN 1 ELSE n.dpt_index - 1 END
)
SELECT 'REC-' || lpad(rec::VARCHAR, 8, '0') AS coh_rec_id,
       CASE id_state WHEN 'missing' THEN NULL
                     WHEN 'typo' THEN upper(substr(md5('typo:' || $seed || ':' || rec), 1, 17))
                     WHEN 'other' THEN psa($seed, other_pid)
                     ELSE coalesce(right_psa, CASE WHEN rec % 2 = 0
                                   THEN upper(substr(md5('fresh:' || $seed || ':' || rec), 1, 17)) END)
       END AS ben_nir_psa,
       birth_year AS nai_ann,
       (CASE WHEN birth_month = 12 THEN birth_month - month_shift ELSE birth_month + month_shift END)::INTEGER
           AS nai_moi,
       (CASE WHEN sex_flip THEN 3 - sex ELSE sex END)::INTEGER AS sex_cod,
       res_dpt, res_com,
       CASE WHEN death_day >= 0 THEN day(greatest(death_day - inclusion_lead, 0)) ELSE day(inclusion_day) END
           AS inc_dte,
       CASE WHEN death_known THEN day(death_day) END AS dcd_dte,
       'I210' AS evt_dgn, 1 AS evt_killip,
       '{PROVIDER}' AS hdh_provider, 'd1' AS hdh_delivery_id, 'COHORT_EXT' AS hdh_dataset,
       TIMESTAMP '2026-01-05 10:00:00' AS hdh_loaded_at
FROM placed;
CREATE OR REPLACE TABLE {TRUTH_TABLE} AS
SELECT '{PROVIDER}' AS hdh_provider, 'REC-' || lpad(rec::VARCHAR, 8, '0') AS coh_rec_id,
       CASE WHEN NOT opted_out THEN ben_idt_ano END AS true_ben_idt_ano
FROM cohort_person;
"""


def write_linkage_test_data(connection: duckdb.DuckDBPyConnection, spec: LinkageTestSpec) -> None:
    """Create the three input tables and the truth table (``linkage_truth.cohort_truth``) in ``connection``.

    The truth names, for each cohort record, the person it was drawn from, or NULL for a person the
    population does not hold or who opted out (no link is then the right answer).
    """
    rng = np.random.default_rng(spec.seed)
    geo = _geography()
    population = _population(spec, rng, geo)
    cohort = _cohort(spec, rng, geo)
    for name, table in (("geo", geo), ("population", population), ("cohort", cohort)):
        connection.register(name, table)
    try:
        for statement in filter(str.strip, _ASSEMBLY.split(";\n")):
            connection.execute(statement, {"seed": spec.seed} if "$seed" in statement else None)
    finally:
        for name in ("geo", "population", "cohort"):
            connection.unregister(name)
        connection.execute("DROP TABLE IF EXISTS person; DROP TABLE IF EXISTS cohort_person")


def published_rows(warehouse: str | Path) -> dict[str, list[tuple]]:
    """Each published linkage table's rows in a DuckDB warehouse, in a stable order: what two runs that
    publish the same decisions must both show."""
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        return {
            table: connection.execute(f"SELECT * FROM linkage.{table} ORDER BY ALL").fetchall()
            for table in OUTPUT_TABLES
        }
