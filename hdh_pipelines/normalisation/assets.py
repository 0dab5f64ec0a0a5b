"""Normalisation: the dbt project (dbt-duckdb) as Dagster assets, continuing the raw tables' lineage.

Two ``@dbt_assets`` share one cached ``DbtProject`` and one translator:

- ``normalisation_monthly``: the large event tables (dbt tag ``hdh_partitioned``:
  claims, pharmacy lines, hospital stays and their marts), partitioned by month
  of their event date. A run over any range of months is one dbt invocation
  (``BackfillPolicy.single_run()``) with ``HDH_PARTITION_START``/``_END`` set to
  the range in dbt's environment; the models replace exactly those months.
- ``normalisation``: everything else (staging, persons, OMOP…), rebuilt whole.
- ``snds_staging``: the staging views generated from the registry (dbt tag
  ``hdh_generated``), one per dataset without hand-written staging, in their own
  group so the lineage graph stays readable. No job selects them: the sensor
  ``snds_staging_automation`` builds a view when its raw table is loaded, and
  the nightly run does not pay for them.

dbt sources map to the raw assets (``raw/<dataset>``), so the UI shows one
graph from delivery to OMOP. Both write the one DuckDB warehouse file, which
takes a single writer: they share the concurrency pool ``duckdb_warehouse``
(limit 1 in ``dagster.yaml``), so runs launched together queue instead of
failing on DuckDB's lock, and hold the warehouse (``WarehouseResource.exclusive``)
while dbt runs.
"""

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    dbt_assets,
)

from hdh_pipelines.core.constants import WAREHOUSE_POOL
from hdh_pipelines.core.partitions import MONTHS
from hdh_pipelines.core.private_files import make_private_dir, write_private_file
from hdh_pipelines.normalisation.manifest import PARTIAL_PARSE_FILE, code_location_manifest_path, dbt_project
from hdh_pipelines.normalisation.resources import WarehouseResource
from hdh_pipelines.registry.dbt_staging import GENERATED_TAG

PARTITIONED_TAG = "hdh_partitioned"
# Tests that read tables of several steps run in the last one only.
CROSS_LAYER_TAG = "hdh_cross_layer"
OWNERS = ["team:data-engineering"]
# How the row count starts in the log line macros/dagster_metadata.sql writes for each model it builds.
ROW_COUNT_PREFIX = "hdh_row_count="
SNDS_STAGING_GROUP = "snds_staging"
# A generated view is built once a load of its raw table is handled: a view reads the Parquet when
# queried, so only a first delivery (or a changed model) needs a build. Not eager(): a delivery partition
# that does not hold the dataset leaves the raw asset's partition missing for good, which would block
# eager() forever; and eager() would build every missing view, ~350 of them, at the first tick.
REBUILT_ON_LOAD = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("rebuilt_on_load")
_GROUPS = {
    "staging": "normalisation",
    "intermediate": "normalisation",
    "marts": "marts",
    "omop": "omop",
    "algorithms": "algorithms",
}


# `dagster dev` re-parses the project at every load, so an edited model shows at once; a deployment
# (and scripts/setup.sh) makes the manifest beforehand with `dbt parse`.
MANIFEST_PATH = code_location_manifest_path()
# Parsed once: each @dbt_assets below takes this document rather than the path, which dagster-dbt would
# parse into a second copy (holding both costs memory and garbage-collector time at every load).
_MANIFEST = json.loads(MANIFEST_PATH.read_text())


class HubDbtTranslator(DagsterDbtTranslator):
    """Asset keys ``<schema>/<model>``, raw sources as ``raw/<dataset>``, groups by lifecycle stage."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source" and dbt_resource_props["source_name"] == "raw":
            return dg.AssetKey(["raw", dbt_resource_props["identifier"].lower()])
        if dbt_resource_props["resource_type"] == "source":
            # Other sources name their asset in their meta (the rights requests: rights/requests).
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if GENERATED_TAG in dbt_resource_props.get("tags", ()):
            return SNDS_STAGING_GROUP
        return _GROUPS.get(dbt_resource_props.get("schema", ""), "normalisation")

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        if GENERATED_TAG in dbt_resource_props.get("tags", ()):
            return REBUILT_ON_LOAD
        return None

    def get_owners(self, dbt_resource_props: Mapping[str, Any]) -> list[str]:
        return OWNERS

    def get_tags(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, str]:
        return {**super().get_tags(dbt_resource_props), "hdh/layer": dbt_resource_props.get("schema", "")}

    def get_partition_mapping(
        self, dbt_resource_props: Mapping[str, Any], dbt_parent_resource_props: Mapping[str, Any]
    ) -> dg.PartitionMapping | None:
        # A month of events may come in any delivery: each month reads them all.
        if dbt_parent_resource_props["resource_type"] == "source":
            return dg.AllPartitionMapping()
        return None


translator = HubDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_code_references=False))


# The month range of a partitioned dbt command (macros/partitions.sql): ISO dates, end exclusive. Environment
# variables rather than dbt vars: dbt parses the whole project again whenever its --vars change, but only
# the files that read a changed environment variable (the partitioned models, through the macro).
PARTITION_START_VARIABLE = "HDH_PARTITION_START"
PARTITION_END_VARIABLE = "HDH_PARTITION_END"


def partition_environment(start: str | None, end: str | None) -> dict[str, str | None]:
    """The dbt environment of a month range, or of a whole build (``None``: the variables unset)."""
    return {PARTITION_START_VARIABLE: start, PARTITION_END_VARIABLE: end}


WHOLE_BUILD = partition_environment(None, None)


@contextlib.contextmanager
def _process_environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """This process's environment with ``values`` set (``None``: removed), then as it was.

    dagster-dbt starts dbt with a copy of ``os.environ`` and takes no environment of its own
    (``DbtCliResource.cli``); the step sets it only while dbt's process starts. Dagster's executors run
    one step at a time in a process, so no other step's dbt starts meanwhile.
    """
    before = {name: os.environ.get(name) for name in values}
    try:
        _set_environment(values)
        yield
    finally:
        _set_environment(before)


def _set_environment(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _partial_parse_cache(warehouse: WarehouseResource, monthly: bool) -> Path:
    """Where the last parse of this warehouse's whole or monthly dbt commands is kept.

    dbt parses the project again, whole, when the profile (the warehouse's path), the environment
    variables of dbt_project.yml or the ``--vars`` differ from the parse it is given; dagster-dbt gives
    each command the code location's parse, made in another environment. Kept here instead, the next
    command against the same warehouse parses only what changed (``dbt parse``: 2.7 s instead of 6.0 s
    with the generated staging off; a new month range, 3.6 s: docs/normalisation.md). Whole and monthly
    commands keep one each, so that a whole step finds its partition variables as it left them. dbt checks
    the file itself: a stale or foreign one only costs a whole parse. It lies in private storage because
    dbt records there the values of the environment variables the project reads.
    """
    kind = "monthly" if monthly else "whole"
    return Path(warehouse.path).parent / "dbt-partial-parse" / f"{kind}.msgpack"


def _build(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
    extra: list[str],
    partition: Mapping[str, str | None] = WHOLE_BUILD,
) -> Iterator[Any]:
    """Run ``dbt build``, yielding each model's materialization and each test's result as dbt finishes it.

    Column schema and column lineage come from dagster-dbt, out of the JSON line
    the post-hook ``log_dagster_metadata`` logs for each model; the row count,
    from the plain line it logs next, is added here. Everything is read by dbt's own
    connection while it holds the DuckDB file: no second connection waits for
    the single writer's lock.
    """
    # The folder dagster-dbt would choose, made here to seed it with this warehouse's last parse.
    run_folder = f"{context.op_execution_context.op.name}-{context.run.run_id[:7]}-{uuid.uuid4().hex[:7]}"
    target_path = dbt_project.project_dir / dbt_project.target_path / run_folder
    cache = _partial_parse_cache(warehouse, monthly=partition != WHOLE_BUILD)
    if cache.exists():
        target_path.mkdir(parents=True)
        shutil.copyfile(cache, target_path / PARTIAL_PARSE_FILE)
    # A whole step unsets the month range too, whatever the process was started with.
    with _process_environment(partition):
        invocation = dbt.cli(["build", *extra], context=context, target_path=target_path)
    row_counts: dict[str, int] = {}
    for raw_event in invocation.stream_raw_events():
        unique_id = raw_event.raw_event["data"].get("node_info", {}).get("unique_id")
        if unique_id and raw_event.raw_event["info"]["name"] == "JinjaLogInfo":
            row_counts.update(_logged_row_count(unique_id, raw_event.raw_event["info"]["msg"]))
        for event in raw_event.to_default_asset_events(
            manifest=invocation.manifest,
            dagster_dbt_translator=invocation.dagster_dbt_translator,
            context=context,
            target_path=invocation.target_path,
            project=invocation.project,
        ):
            if isinstance(event, dg.Output) and unique_id in row_counts:
                event = event.with_metadata({**event.metadata, "dagster/row_count": row_counts[unique_id]})
            yield event
    parsed = target_path / PARTIAL_PARSE_FILE
    if parsed.exists():
        make_private_dir(cache.parent)
        write_private_file(cache, parsed.read_bytes())
    # dagster-dbt gives each invocation its own target folder (compiled SQL, run results) and never
    # removes it: a successful run's is dropped here, a failed run's is kept to debug it.
    shutil.rmtree(target_path, ignore_errors=True)


def _logged_row_count(unique_id: str, message: str) -> dict[str, int]:
    """``{unique_id: rows}`` from a model's ``hdh_row_count=<n>`` line; ``{}`` from any other log line."""
    count = message.removeprefix(ROW_COUNT_PREFIX)
    return {unique_id: int(count)} if count != message and count.isdigit() else {}


def _whole_models(
    name: str, select: str, exclude: str, description: str, extra: tuple[str, ...] = ()
) -> dg.AssetsDefinition:
    @dbt_assets(
        manifest=_MANIFEST,
        project=dbt_project,
        select=select,
        exclude=exclude,
        name=name,
        dagster_dbt_translator=translator,
        pool=WAREHOUSE_POOL,
        op_tags={"hdh/kind": "normalisation"},
    )
    def whole_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource):
        with warehouse.exclusive():
            yield from _build(context, dbt, warehouse, list(extra))

    whole_models.__doc__ = description
    return whole_models


def upstream_models(manifest: Mapping[str, Any]) -> list[str]:
    """The unpartitioned models the monthly ones read, and the persons their relationship tests refer to.

    Listed by name rather than as ``+tag:… --exclude tag:…``: dbt applies
    indirect test selection before the exclusion, which would keep tests
    whose monthly model is excluded.
    """
    nodes, parents = manifest["nodes"], manifest["parent_map"]
    models = {uid: n for uid, n in nodes.items() if n["resource_type"] == "model"}
    roots = [uid for uid, n in models.items() if PARTITIONED_TAG in n["tags"] or n["name"] == "persons"]
    seen: set[str] = set()
    while roots:
        uid = roots.pop()
        if uid not in seen:
            seen.add(uid)
            roots.extend(p for p in parents.get(uid, []) if p in nodes)
    return sorted(
        nodes[uid]["name"]
        for uid in seen
        if nodes[uid]["resource_type"] in ("model", "seed") and PARTITIONED_TAG not in nodes[uid]["tags"]
    )


# Three steps, so that the op graph has no cycle: the models the monthly ones
# read, the monthly ones, then the rest (OMOP, cohort, algorithms…), each
# rebuilt whole.
_UPSTREAM = " ".join(upstream_models(_MANIFEST))
normalisation_upstream = _whole_models(
    "normalisation_upstream",
    select=_UPSTREAM,
    exclude="",
    description="Staging and person resolution: what the monthly models read, rebuilt whole.",
    # Only the tests whose every model is built here: the others (a monthly
    # model's relationship to persons…) run with the step that builds their last model.
    extra=("--indirect-selection", "cautious"),
)


@dbt_assets(
    manifest=_MANIFEST,
    project=dbt_project,
    select=f"tag:{PARTITIONED_TAG}",
    exclude=f"tag:{CROSS_LAYER_TAG}",
    name="normalisation_monthly",
    partitions_def=MONTHS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    dagster_dbt_translator=translator,
    pool=WAREHOUSE_POOL,
    op_tags={"hdh/kind": "normalisation"},
)
def normalisation_monthly(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
):
    """Build the month range of the run (one dbt invocation, however many months)."""
    window = context.partition_time_window
    start, end = window.start.date().isoformat(), window.end.date().isoformat()
    context.log.info(f"Building months {start} to {end} (end exclusive).")
    with warehouse.exclusive():
        yield from _build(context, dbt, warehouse, [], partition_environment(start, end))


normalisation_downstream = _whole_models(
    "normalisation_downstream",
    select="fqn:*",
    exclude=f"{_UPSTREAM} tag:{PARTITIONED_TAG} tag:{GENERATED_TAG}",
    description="Everything built from the monthly models or beside them (OMOP, cohort…), rebuilt whole.",
)

# A manifest parsed with HDH_DBT_GENERATED_STAGING=off (dbt_project.yml) has no generated model.
snds_staging = (
    _whole_models(
        "snds_staging",
        select=f"tag:{GENERATED_TAG}",
        exclude="",
        description="Typed staging views generated from the registry, one per dataset without hand-written "
        "staging; a run builds the requested ones only.",
    )
    if any(GENERATED_TAG in node["tags"] for node in _MANIFEST["nodes"].values())
    else None
)

snds_staging_automation = dg.AutomationConditionSensorDefinition(
    "snds_staging_automation",
    target=dg.AssetSelection.groups(SNDS_STAGING_GROUP),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Builds a generated staging view when its raw table is loaded.",
)

normalisation_assets = [
    normalisation_upstream,
    normalisation_monthly,
    normalisation_downstream,
    *([snds_staging] if snds_staging is not None else []),
]
