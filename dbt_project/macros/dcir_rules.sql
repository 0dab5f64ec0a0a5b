{#- The SNDS rules the community applies to the DCIR before counting care
    (docs/normalisation.md#snds-rules). Each is defined here once. -#}

{#- Whether a DCIR line (ER_PRS_F, with its detail lines) is care to count:

    - information_only: DPN_QLF = 71, activity of public hospitals sent for
      information, not care reimbursed in the DCIR (Documentation-SNDS, FAQ
      DCIR and fiche "Requête type dans la table prestations du DCIR";
      SCALPEL-Extraction DcirFilters.filterInformationFlux);
    - public_t2a: ETE_IND_TAA = 1 on the claim's establishment line (ER_ETE_F;
      IR_TAA_V 1 "TAA publique"), activity of a public hospital billing the
      insurance directly (FIDES): its external consultations and acts and its
      stays are in the PMSI in full and in the DCIR only for the hospitals
      already on direct billing, so the community filters them out
      (fiche "Requête type dans la table prestations du DCIR":
      ETE_IND_TAA <> 1 OR ETE_IND_TAA IS MISSING; fiches "Actes et
      consultations externes", "Dépenses des établissements de santé").
      Only 1 flags: 0 (hors TAA), 2 (TAA privée), 8 (non transmis),
      9 (inconnue) and NULL are kept, NULL above all for a claim without an
      ER_ETE_F line (private practice), which the community's left join keeps;
    - no_base_act: BSE_PRS_NAT = 0, "nature de prestation sans objet"
      (SCALPEL-Extraction DcirSource.sanitize);
    - supplement: CPL_MAJ_TOP >= 2, a majoration or a participation line, not
      an act of its own (fiche "Requête type dans la table prestations du
      DCIR": CPL_MAJ_TOP < 2; sndsTools extract_drug_dispenses);
    - missing_flag: one of DPN_QLF, BSE_PRS_NAT, CPL_MAJ_TOP is not
      delivered, so the line cannot be shown to be care (the community
      filters drop such lines too: a Spark or SQL comparison with NULL is not
      true);
    - countable otherwise.

    Never NULL: every line gets exactly one status, the first that applies in
    the order above (missing_flag first). -#}
{% macro dcir_line_status(dpn_qlf, bse_prs_nat, cpl_maj_top, ete_ind_taa) -%}
    case
        when {{ dpn_qlf }} is null or {{ bse_prs_nat }} is null or {{ cpl_maj_top }} is null then 'missing_flag'
        when {{ dpn_qlf }} = 71 then 'information_only'
        when {{ ete_ind_taa }} = 1 then 'public_t2a'
        when {{ bse_prs_nat }} = 0 then 'no_base_act'
        when {{ cpl_maj_top }} >= 2 then 'supplement'
        else 'countable'
    end
{%- endmacro %}


{#- The statuses dcir_line_status() gives, for accepted_values tests. -#}
{% macro dcir_line_statuses() -%}
    {{ return(['countable', 'information_only', 'public_t2a', 'no_base_act', 'supplement', 'missing_flag']) }}
{%- endmacro %}


{#- A dispensing is identified by the person's pseudonym and twin rank, the
    day of dispensing (EXE_SOI_DTD) and the presentation (CIP13). -#}
{% macro dispensing_key() -%}
    ben_nir_psa, ben_rng_gem, exe_soi_dtd, pha_prs_c13
{%- endmacro %}


{#- Regularisations netted (Documentation-SNDS, fiche "Requête type dans la
    table prestations du DCIR", "Prise en compte des régularisations"): a
    cancelled dispensing comes back, in a later monthly flow and so under
    another claim key, as a line identical but for its negative quantity;
    the quantities (and amounts) of a dispensing's countable lines are summed
    and the dispensing exists only where the sum is strictly positive.

    One row per dispensing (dispensing_key()), carrying the claim key and
    line number of its first positive line (earliest flow), the net boxes and
    the net reimbursement base (boxes x unit price, fiche "Tables affinées"),
    and how many lines were netted. Only countable lines (dcir_line_status)
    with their claim take part.

    first_line_in_partition: true for the dispensings whose first line falls
    in the run's months (the partitioned mart's own rows), false for those of
    other months that a line of the run's months changes (see
    delete_renetted_dispensings). Only the lines of dispensings touched by the
    run's months are read, so a monthly run does not net the whole history. -#}
{% macro netted_dispensings(first_line_in_partition=true) %}
with dispensing_lines as (
    select lines.*
    from {{ countable_pharmacy_lines() }} as lines
    semi join ({{ touched_dispensings() }}) as touched using ({{ dispensing_key() }})
),

netted as (
    {{ regularisations_netted(
        'dispensing_lines', dispensing_key(), 'pha_act_qsn', 'net_boxes', 'pha_ord_num',
        {'net_reimbursement_base': 'pha_act_qsn * pha_act_pru'}
    ) }}
)

select *
from netted
where net_boxes > 0
    and {% if not first_line_in_partition %}not {% endif %}{{ in_partition('flx_dis_dtd') }}
{% endmacro %}


{#- The netting of regularisations itself, for any DCIR detail (a dispensing
    of ER_PHA_F, a CCAM act of ER_CAM_F): one row per group of identical lines
    (the columns `key`), the first positive line (earliest flow, then the claim
    key, then `line_order`) carrying the group's signed quantities summed as
    `net_quantity` (BIGINT on both engines: DuckDB's sum would be HUGEINT, which
    Parquet copies hold as DOUBLE), the other sums of `summed` (name ->
    expression) and netted_line_count. The caller keeps the rows whose net
    quantity is > 0. -#}
{% macro regularisations_netted(lines, key, quantity, net_quantity, line_order, summed={}) %}
    select
        *,
        cast(sum({{ quantity }}) over netted_group as {{ dbt.type_bigint() }}) as {{ net_quantity }},
        {%- for name, expression in summed.items() %}
        sum({{ expression }}) over netted_group as {{ name }},
        {%- endfor %}
        count(*) over netted_group as netted_line_count
    from {{ lines }}
    window netted_group as (partition by {{ key }})
    qualify row_number() over (
        partition by {{ key }}
        order by
            {{ quantity }} > 0 desc, flx_dis_dtd, flx_trt_dtd, {{ dcir_claim_key_columns() | join(', ') }},
            {{ line_order }}
    ) = 1
{% endmacro %}


{#- The pharmacy lines that take part in dispensings: countable
    (dcir_line_status) and with their claim. -#}
{% macro countable_pharmacy_lines() -%}
    (select * from {{ ref('int_claim_pharmacy_lines') }} where has_claim and line_status = 'countable')
{%- endmacro %}


{#- The dispensings a line of the run's months belongs to (all of them in a
    whole build). -#}
{% macro touched_dispensings() -%}
    select distinct {{ dispensing_key() }}
    from {{ countable_pharmacy_lines() }} as lines
    where {{ in_partition('lines.flx_dis_dtd') }}
{%- endmacro %}


{#- Post-hooks of the partitioned drug_dispensations mart. A regularisation
    arrives in a later monthly flow than the dispensing it cancels, so a run
    of its month must also correct the dispensing's row in an earlier month:
    the rows of other months whose dispensing a line of the run's months
    touches are deleted, then inserted again netted (not at all when the
    dispensing is cancelled). Rendered empty in whole builds, which net
    everything at once. -#}
{% macro delete_renetted_dispensings() -%}
    {%- if is_partitioned_run() -%}
        {%- set renetted -%}
            not {{ in_partition('kept.flx_dis_dtd') }}
            and exists (
                select 1
                from ({{ touched_dispensings() }}) as touched
                where touched.ben_nir_psa = kept.ben_nir_psa
                    and touched.ben_rng_gem = kept.ben_rng_gem
                    and touched.exe_soi_dtd = kept.dispensing_date
                    and touched.pha_prs_c13 = cast(kept.cip13 as bigint)
            )
        {%- endset -%}
        {{ remove_rows(this, 'kept', renetted) }}
    {%- endif -%}
{%- endmacro %}

{% macro insert_renetted_dispensings() -%}
    {%- if is_partitioned_run() -%}
        insert into {{ this }} by name
        {{ drug_dispensation_rows(first_line_in_partition=false) }}
    {%- endif -%}
{%- endmacro %}


{#- The rows of the drug_dispensations mart (one per netted dispensing),
    shared by the model and its post-hook so that both write the same columns. -#}
{% macro drug_dispensation_rows(first_line_in_partition=true) %}
with dispensings as (
    {{ netted_dispensings(first_line_in_partition) }}
)

select
    dct_ord_num,
    flx_dis_dtd,
    flx_emt_num,
    flx_emt_ord,
    flx_emt_typ,
    flx_trt_dtd,
    org_cle_num,
    prs_ord_num,
    rem_typ_aff,
    pha_ord_num,
    ben_idt_ano,
    ben_nir_psa,
    ben_rng_gem,
    exe_soi_dtd as dispensing_date,
    lpad(cast(pha_prs_c13 as {{ dbt.type_string() }}), 13, '0') as cip13,
    atc_code,
    net_boxes as boxes,
    pha_act_pru as unit_price,
    net_reimbursement_base as reimbursement_base,
    netted_line_count,
    prs_nat_ref as benefit_nature_code,
    -- Lines for information only never reach a dispensing (dcir_line_status):
    -- the column stays for the readers that filter on it.
    false as is_for_information_only
from dispensings
where not {{ is_opted_out('dispensings.ben_nir_psa', 'dispensings.ben_rng_gem') }}
{% endmacro %}


{#- A CCAM act of the DCIR is identified by the person's pseudonym and twin
    rank, the day it was performed (EXE_SOI_DTD), its CCAM code with its
    activity and treatment phase (Documentation-SNDS, fiche "Tables affinées":
    an act is counted with CAM_ACT_COD and CAM_TRT_PHA) and the tooth it was
    performed on (CAM_QUA_DEN, so that the same dental act on two teeth stays
    two acts). -#}
{% macro ccam_act_key() -%}
    ben_nir_psa, ben_rng_gem, exe_soi_dtd, cam_prs_ide, cam_act_cod, cam_trt_pha, cam_qua_den
{%- endmacro %}


{#- Regularisations netted for the CCAM acts of the DCIR, the rule of
    netted_dispensings: ER_CAM_F has no quantity of its own, an act's is
    PRS_ACT_QTE of its ER_PRS_F line (fiches "Tables affinées" and "Requête
    type dans la table prestations du DCIR"), negative on the regularisation
    that cancels it. Per act (ccam_act_key()), the countable lines with their
    claim are summed; the act exists where the net quantity is > 0, with the
    claim key and CCAM line number (CAM_ORD_NUM) of its first positive line.
    Whole history: the OMOP tables that read it are rebuilt whole. -#}
{% macro netted_ccam_acts() %}
with act_lines as (
    select *
    from {{ ref('int_claim_ccam_lines') }}
    where has_claim and line_status = 'countable'
)

{{ regularisations_netted('act_lines', ccam_act_key(), 'prs_act_qte', 'net_quantity', 'cam_ord_num') }}
{% endmacro %}
