"""What a project may receive: the extractable datasets, their sources and their identifiers.

Each dataset is one warehouse table (or, for the linked cohort, a join) whose
rows belong to a person. Identifier columns (the hub's person ids and the
record keys shared by every extract) are never approvable: they are replaced
in every output by project pseudonyms (``person_id``, ``claim_id``,
``stay_id``) computed with the project's own key, so rows join within one
workspace and never across two.
"""

from __future__ import annotations

from dataclasses import dataclass

# The DCIR claim key (clé de jointure DCIR), shared by claims and drug_dispensations.
DCIR_CLAIM_KEY = (
    "dct_ord_num",
    "flx_dis_dtd",
    "flx_emt_num",
    "flx_emt_ord",
    "flx_emt_typ",
    "flx_trt_dtd",
    "org_cle_num",
    "prs_ord_num",
    "rem_typ_aff",
)
PMSI_STAY_KEY = ("pmsi_year", "eta_num", "rsa_num")

# Person identifiers at hub level and the hub's lineage columns: never in a workspace.
HUB_IDENTIFIER_COLUMNS = frozenset(
    {"ben_idt_ano", "ben_nir_psa", "ben_rng_gem", "nir_ano_17", "coh_rec_id", "rsa_num"}
    | set(DCIR_CLAIM_KEY)
    | {"hdh_provider", "hdh_delivery_id", "hdh_dataset", "hdh_loaded_at"}
)
PERSON_PSEUDONYM = "person_id"


@dataclass(frozen=True)
class RecordPseudonym:
    """A project-keyed replacement for a record key, so a workspace's tables still join."""

    column: str
    # Hashed with the value so a claim pseudonym can never equal a stay or person pseudonym.
    domain: str
    source_columns: tuple[str, ...]


@dataclass(frozen=True)
class ExtractableDataset:
    name: str
    description: str
    # The dbt model whose YAML documents the columns.
    model: str
    # The relation to read, as SQL over the attached warehouse ``wh``; it must yield ben_idt_ano.
    source_sql: str
    # Date column deciding the month a row belongs to; None: not sliced by month (persons).
    period_column: str | None
    record_pseudonyms: tuple[RecordPseudonym, ...] = ()
    # Staging tables whose deliveries the dataset comes from (for the manifest).
    staging_sources: tuple[str, ...] = ()
    requires_linkage: bool = False

    @property
    def pseudonym_columns(self) -> tuple[str, ...]:
        return (PERSON_PSEUDONYM, *(p.column for p in self.record_pseudonyms))


_CLAIM = RecordPseudonym("claim_id", "claim", DCIR_CLAIM_KEY)
# The whole stay key is hashed; eta_num and pmsi_year alone join nothing and stay approvable,
# rsa_num never is.
_STAY = RecordPseudonym("stay_id", "stay", PMSI_STAY_KEY)

EXTRACTABLE_DATASETS: dict[str, ExtractableDataset] = {
    dataset.name: dataset
    for dataset in (
        ExtractableDataset(
            name="persons",
            description="One row per person of the project's population.",
            model="persons",
            source_sql="wh.marts.persons",
            period_column=None,
            staging_sources=("stg_ir_ben_r",),
        ),
        ExtractableDataset(
            name="claims",
            description="DCIR claims of the population, one row per claim, in the months extracted "
            "(by care start date).",
            model="claims",
            source_sql="wh.marts.claims",
            period_column="care_start_date",
            record_pseudonyms=(_CLAIM,),
            staging_sources=("stg_er_prs_f",),
        ),
        ExtractableDataset(
            name="drug_dispensations",
            description="Drug dispensations of the population, one row per pharmacy line "
            "(by dispensing date).",
            model="drug_dispensations",
            source_sql="wh.marts.drug_dispensations",
            period_column="dispensing_date",
            record_pseudonyms=(_CLAIM,),
            staging_sources=("stg_er_pha_f", "stg_er_prs_f"),
        ),
        ExtractableDataset(
            name="hospital_stays",
            description="PMSI MCO stays of the population, one row per stay (by stay start date).",
            model="hospital_stays",
            source_sql="wh.marts.hospital_stays",
            period_column="stay_start_date",
            record_pseudonyms=(_STAY,),
            staging_sources=("stg_t_mco_b", "stg_t_mco_c"),
        ),
        ExtractableDataset(
            name="hospital_stay_diagnoses",
            description="Diagnoses of the population's stays (DP, DR, DAS of the stay, DP and DR of its "
            "medical units), one row per diagnosis (by stay start date).",
            model="hospital_stay_diagnoses",
            source_sql="wh.marts.hospital_stay_diagnoses",
            period_column="stay_start_date",
            record_pseudonyms=(_STAY,),
            staging_sources=("stg_t_mco_b", "stg_t_mco_d", "stg_t_mco_um"),
        ),
        ExtractableDataset(
            name="cohort_ext",
            description="Records of the external hospital cohort linked to persons of the population "
            "(by inclusion date).",
            model="stg_cohort_ext",
            # linkage.links: one row per linked cohort record (hdh_provider, coh_rec_id) -> ben_idt_ano.
            source_sql="(select cohort.*, links.ben_idt_ano from wh.staging.stg_cohort_ext as cohort "
            "inner join wh.linkage.links as links using (hdh_provider, coh_rec_id))",
            period_column="inc_dte",
            staging_sources=("stg_cohort_ext",),
            requires_linkage=True,
        ),
    )
}
