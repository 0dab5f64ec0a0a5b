"""The rights stage in Dagster: the intake sensor, the requests asset, open requests and their deadline check,
and the public directory of projects. A thin shell over ``hdh_pipelines.rights``; metadata holds counts only.
"""

import hashlib
from collections import Counter
from datetime import UTC, date, datetime
from html import escape
from pathlib import Path

import dagster as dg
from pydantic import Field

from hdh_deliver.keys import ProviderRegistry
from hdh_pipelines.catalogue.resources import CatalogueResource
from hdh_pipelines.core.constants import WAREHOUSE_POOL
from hdh_pipelines.core.private_files import write_private_file
from hdh_pipelines.ingestion.resources import HubResource
from hdh_pipelines.rights.deadlines import AGE_BUCKETS, OVERDUE, age_bucket, is_overdue, open_request_counts
from hdh_pipelines.rights.directory import project_status, publish_directory
from hdh_pipelines.rights.process import RightsSettings, pending_requests, process_intake
from hdh_pipelines.rights.requests import REQUEST_SUFFIX, SIGNATURE_SUFFIX
from hdh_pipelines.rights.resources import RightsResource
from hdh_pipelines.rights.store import RightsStore
from hdh_pipelines.workspaces import scan_registry
from hdh_pipelines.workspaces.documents import french_page
from hdh_pipelines.workspaces.resources import WorkspaceResource

RIGHTS_GROUP = "rights"
RIGHTS_OWNERS = ["team:data-governance"]
REQUESTS_KEY = dg.AssetKey(["rights", "requests"])
OPEN_REQUESTS_KEY = dg.AssetKey(["rights", "open_requests"])
DIRECTORY_KEY = dg.AssetKey(["rights", "project_directory"])
DEADLINE_CHECK = "answered_within_deadline"
OPEN_REQUESTS_PAGE = "open_requests.html"


def _store(hub: HubResource) -> RightsStore:
    return RightsStore.under(Path(hub.private_root))


@dg.asset(
    key=REQUESTS_KEY,
    group_name=RIGHTS_GROUP,
    owners=RIGHTS_OWNERS,
    kinds={"python"},
    description="Requests of persons from the hub's rights form: forged and replayed ones refused, "
    "oppositions and withdrawals written as opt-out source rows (dbt source rights.oppositions), "
    "access requests answered with a letter, all registered with their GDPR deadline.",
    # Access requests read the warehouse, which DuckDB will not open while dbt writes it.
    pool=WAREHOUSE_POOL,
)
def rights_requests(
    context: dg.AssetExecutionContext, rights: RightsResource, hub: HubResource, workspaces: WorkspaceResource
) -> dg.MaterializeResult:
    settings = RightsSettings(
        store=_store(hub),
        intake=Path(rights.intake_dir),
        forms=ProviderRegistry.from_file(Path(rights.forms_registry_file)),
        workspaces=workspaces.settings(),
    )
    with workspaces.warehouse.exclusive():
        report = process_intake(settings, datetime.now(UTC))
    context.log.info(
        f"Rights requests: {sum(report.accepted.values())} accepted, {sum(report.refused.values())} refused."
    )
    return dg.MaterializeResult(
        metadata={
            **{f"accepted_{kind}": count for kind, count in sorted(report.accepted.items())},
            **{f"refused_{reason}": count for reason, count in sorted(report.refused.items())},
            "accepted": sum(report.accepted.values()),
            "refused": sum(report.refused.values()),
            "letters_prepared": report.letters,
        }
    )


class OpenRequestsConfig(dg.Config):
    as_of: str | None = Field(
        default=None, description="Day (YYYY-MM-DD) the deadlines are judged on; today if unset."
    )


def _open_requests_page(entries: list[dict], today: date) -> str:
    rows = "".join(
        f"<tr><td>{escape(e['request_id'])}</td><td>{escape(e['type'])}</td><td>{escape(e['received_on'])}</td>"
        f"<td>{escape(e['due_on'])}</td><td>{escape(age_bucket(e, today))}</td>"
        f"<td>{escape(e['extension_reason'] or '')}</td><td>{escape(e['outcome'] or '')}</td></tr>"
        for e in entries
        if e["status"] == "open"
    )
    body = (
        f"<p>Demandes ouvertes au {today:%d/%m/%Y}.</p><table><tr><th>Demande</th><th>Type</th>"
        "<th>Reçue le</th><th>Échéance</th><th>Ancienneté</th><th>Prolongation</th><th>État</th></tr>"
        f"{rows}</table>"
    )
    return french_page("Demandes des personnes en cours", body)


@dg.asset(
    key=OPEN_REQUESTS_KEY,
    deps=[REQUESTS_KEY],
    group_name=RIGHTS_GROUP,
    owners=RIGHTS_OWNERS,
    kinds={"html"},
    description="Open requests by age bucket and type (counts); the staff's list of them, owner-only. "
    "Its check fails when a request is past its GDPR deadline.",
    check_specs=[dg.AssetCheckSpec(DEADLINE_CHECK, asset=OPEN_REQUESTS_KEY)],
)
def open_requests(context: dg.AssetExecutionContext, config: OpenRequestsConfig, hub: HubResource):
    today = date.fromisoformat(config.as_of) if config.as_of else date.today()
    store = _store(hub).prepare()
    entries = store.entries()
    counts = open_request_counts(entries, today)
    write_private_file(store.root / OPEN_REQUESTS_PAGE, _open_requests_page(entries, today).encode("utf-8"))
    overdue = counts["by_age"][OVERDUE]
    yield dg.MaterializeResult(
        metadata={
            **{f"open_{label.replace(' ', '_')}": counts["by_age"][label] for _, label in AGE_BUCKETS},
            "open_overdue": overdue,
            **{f"open_{kind}": count for kind, count in counts["by_type"].items()},
            "extended": sum(1 for e in entries if e["status"] == "open" and e["extension_reason"]),
            "closed": sum(1 for e in entries if e["status"] == "closed"),
            "as_of": today.isoformat(),
            "staff_list": dg.MetadataValue.path(str(store.root / OPEN_REQUESTS_PAGE)),
        }
    )
    yield dg.AssetCheckResult(
        check_name=DEADLINE_CHECK,
        passed=overdue == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{overdue} open request(s) past their GDPR deadline on {today}."
        if overdue
        else f"No open request is past its deadline on {today}.",
        metadata={
            "overdue": overdue,
            "overdue_by_type": dg.MetadataValue.json(
                dict(Counter(e["type"] for e in entries if is_overdue(e, today)))
            ),
        },
    )


@dg.asset(
    key=DIRECTORY_KEY,
    group_name=RIGHTS_GROUP,
    owners=RIGHTS_OWNERS,
    kinds={"csv", "json"},
    description="Public directory of the projects using the hub's data (open data, and the catalogue's "
    "projects.html): controller, purpose, datasets, regulatory route and references, dates, status, results.",
)
def project_directory(catalogue: CatalogueResource, workspaces: WorkspaceResource) -> dg.MaterializeResult:
    if not catalogue.open_data_dir:
        raise dg.Failure(
            description="No open-data folder is configured (CatalogueResource.open_data_dir, "
            "$HDH_OPEN_DATA_DIR): the directory of projects has nowhere to be published.",
            metadata={"reason": "open_data_dir_missing"},
            allow_retries=False,
        )
    scan = scan_registry(Path(workspaces.projects_dir))
    folder = publish_directory(scan.projects.values(), Path(catalogue.open_data_dir), datetime.now(UTC))
    statuses = Counter(project_status(project, date.today()) for project in scan.projects.values())
    return dg.MaterializeResult(
        metadata={
            "projects": len(scan.projects),
            "project_files_refused": len(scan.refused),
            **{f"status_{status}": count for status, count in sorted(statuses.items())},
            "folder": dg.MetadataValue.path(str(folder)),
        }
    )


rights_request_job = dg.define_asset_job(
    "rights_request_job",
    selection=dg.AssetSelection.assets(REQUESTS_KEY, OPEN_REQUESTS_KEY)
    # The opposition path: the rights form's source, then the one model every purge reads.
    | dg.AssetSelection.assets(
        dg.AssetKey(["staging", "stg_rights_oppositions"]),
        dg.AssetKey(["intermediate", "int_opt_out_exclusions"]),
    ),
    description="Process the rights requests waiting in the intake and apply the oppositions at once.",
    tags={"hdh/kind": "rights"},
)


def _pending_digest(intake: Path, request_ids: list[str]) -> str:
    """Names and contents of the pending files: a replay under an old name is a new run, a retry is not."""
    digest = hashlib.sha256()
    for request_id in request_ids:
        for suffix in (REQUEST_SUFFIX, SIGNATURE_SUFFIX):
            path = intake / f"{request_id}{suffix}"
            digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


@dg.sensor(
    name="rights_request_sensor",
    job=rights_request_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches rights_request_job when signed requests wait in the rights form's intake.",
)
def rights_request_sensor(context: dg.SensorEvaluationContext, rights: RightsResource):
    intake = Path(rights.intake_dir)
    pending = pending_requests(intake)
    if not pending:
        return dg.SkipReason("No complete request in the intake.")
    try:
        digest = _pending_digest(intake, pending)
    except FileNotFoundError:
        return dg.SkipReason("The intake changed while it was read (a run is processing it).")
    context.log.info(f"{len(pending)} request(s) waiting in the intake.")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"rights-{digest}", tags={"hdh/kind": "rights"})]
    )


rights_assets = [rights_requests, open_requests, project_directory]
