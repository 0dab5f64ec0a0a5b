-- One row per CIP13 presentation of the drug referential (IR_PHA_R, latest
-- delivered version): its ATC class, whether it is a large pack, the units in
-- a box and the days of treatment a box covers. Every use of the drug
-- referential (ATC per dispensation, large packs in the targeting algorithms,
-- OMOP quantity and duration) reads it from here.
--
-- Rules (docs/normalisation.md, "Referentials"):
-- - ATC class: PHA_ATC_C07, or PHA_ATC_CLA of the referential's older layout.
-- - Large pack: PHA_CND_TOP = 'GC' (grand conditionnement).
-- - Days per box: 90 for a large pack, 30 for any other presentation the
--   referential holds: the conditioning rule of SCALPEL-Extraction (large
--   packs are about three months of treatment, standard packs about one).
--   A CIP13 the referential does not hold has no row here, hence no duration.
-- - Units per box: the first quantity of PHA_UPC_NBR ("30", "30 CPR" and
--   "3 / 2 ML" give 30, 30 and 3), NULL when it is missing or lists several
--   kinds of units ("3 + 5"), as in the Health Data Hub's OMOP ETL of the DCIR.
{%- set large_pack_days = 90 %}
{%- set standard_pack_days = 30 %}

with presentations as (
    select * from {{ ref('stg_ir_pha_r') }}
)

select
    pha_cip_c13 as cip13,
    coalesce(pha_atc_c07, pha_atc_cla) as atc_code,
    pha_med_nom as label,
    coalesce(pha_cnd_top = 'GC', false) as is_large_pack,
    case
        when pha_upc_nbr is null or contains(pha_upc_nbr, '+') then null
        else try_cast(nullif(regexp_extract(pha_upc_nbr, '^([0-9]+)', 1), '') as integer)
    end as units_per_pack,
    case
        when pha_cnd_top = 'GC' then {{ large_pack_days }}
        else {{ standard_pack_days }}
    end as days_per_pack,
    hdh_provider,
    hdh_delivery_id,
    hdh_loaded_at
from presentations
