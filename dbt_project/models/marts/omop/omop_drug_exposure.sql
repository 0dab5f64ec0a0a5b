-- OMOP CDM 5.4 DRUG_EXPOSURE: one exposure per dispensed pharmacy line of a
-- person of the OMOP person table. Lines for information only and
-- regularisations (no box dispensed, or fewer than none) are not exposures.
-- The CIP13 code is the source value and its ATC class rides along in
-- atc_source_value, a column the CDM does not define (CDM tools ignore it);
-- the concepts come from int_omop_concept_map through the CIP7 inside the
-- CIP13, 0 until the OHDSI vocabularies are loaded (docs/normalisation.md).
--
-- Quantity and duration come from the drug referential (int_drug_presentations):
-- quantity = boxes x units per box; days_supply = boxes x days one box covers
-- (90 for a large pack, 30 otherwise), and the exposure ends days_supply - 1
-- days after it starts (the CDM's start + days supply - 1). A CIP13 the
-- referential does not hold has no pack size: days_supply stays NULL and the
-- exposure ends the day it starts; a box without a unit count leaves quantity
-- NULL rather than mixing boxes with units.
with dispensations as (
    select *
    from {{ ref('drug_dispensations') }}
    where not is_for_information_only
        and boxes > 0
        and dispensing_date is not null
),

presentations as (
    select cip13, units_per_pack, days_per_pack
    from {{ ref('int_drug_presentations') }}
),

sized as (
    select
        dispensations.*,
        dispensations.boxes * presentations.units_per_pack as unit_quantity,
        cast(dispensations.boxes * presentations.days_per_pack as integer) as supply_days
    from dispensations
    left join presentations on presentations.cip13 = cast(dispensations.cip13 as bigint)
),

cip7_concepts as (
    select source_code, source_concept_id, standard_concept_id
    from {{ ref('int_omop_concept_map') }}
    where code_system = 'cip7'
)

select
    {{ surrogate_id([
        'dispensations.dct_ord_num', 'dispensations.flx_dis_dtd', 'dispensations.flx_emt_num',
        'dispensations.flx_emt_ord', 'dispensations.flx_emt_typ', 'dispensations.flx_trt_dtd',
        'dispensations.org_cle_num', 'dispensations.prs_ord_num', 'dispensations.rem_typ_aff',
        'dispensations.pha_ord_num',
    ]) }} as drug_exposure_id,
    omop_person.person_id,
    coalesce(cip7_concepts.standard_concept_id, 0) as drug_concept_id,
    dispensations.dispensing_date as drug_exposure_start_date,
    cast(dispensations.dispensing_date as timestamp) as drug_exposure_start_datetime,
    dispensations.dispensing_date + coalesce(dispensations.supply_days - 1, 0) as drug_exposure_end_date,
    cast(dispensations.dispensing_date + coalesce(dispensations.supply_days - 1, 0) as timestamp)
        as drug_exposure_end_datetime,
    cast(null as date) as verbatim_end_date,
    32810 as drug_type_concept_id, -- Claim
    cast(null as {{ dbt.type_string() }}) as stop_reason,
    cast(null as integer) as refills,
    cast(dispensations.unit_quantity as double) as quantity,
    dispensations.supply_days as days_supply,
    cast(null as {{ dbt.type_string() }}) as sig,
    0 as route_concept_id,
    cast(null as {{ dbt.type_string() }}) as lot_number,
    cast(null as bigint) as provider_id,
    cast(null as bigint) as visit_occurrence_id,
    cast(null as bigint) as visit_detail_id,
    dispensations.cip13 as drug_source_value,
    coalesce(cip7_concepts.source_concept_id, 0) as drug_source_concept_id,
    cast(null as {{ dbt.type_string() }}) as route_source_value,
    cast(null as {{ dbt.type_string() }}) as dose_unit_source_value,
    dispensations.atc_code as atc_source_value
from sized as dispensations
inner join {{ ref('omop_person') }} as omop_person
    on omop_person.person_source_value = dispensations.ben_idt_ano
-- A French CIP13 is 34009, the pack's CIP7, then a check digit.
left join cip7_concepts on cip7_concepts.source_code = substr(dispensations.cip13, 6, 7)
