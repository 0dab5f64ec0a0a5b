"""Materialise one project's workspace: plan the months, extract in DuckDB, document, swap in, audit.

A workspace is ``<root>/<project>/``::

    parquet/<dataset>.parquet                          datasets without a period (persons)
    parquet/<dataset>/month=YYYY-MM/data_0.parquet     the others, one folder per month of the period date
    workspace.duckdb                                   the same tables, when the project asks for it
    README.md, data_dictionary.csv, manifest.json

A run rebuilds the months it was asked for from the warehouse and carries
the workspace's other months over from its previous version, re-filtered to
the current population, so an opt-out applies to every month at once
(retroactively). Everything is written into a private staging folder and
exchanged with the previous workspace in one atomic rename; a failed run
leaves the previous workspace as it was. Each outcome (materialised, refused,
failed) is appended to the audit trail.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

from hdh_pipelines.core.private_files import (
    held_lock,
    make_private_dir,
    make_tree_owner_only,
    write_private_file,
)
from hdh_pipelines.core.sql import quote_literal
from hdh_pipelines.normalisation.warehouse import Warehouse, has_relation
from hdh_pipelines.rights.opt_out import (
    EXCLUSIONS_TABLE,
    OPT_OUT_STAGING_TABLE,
    excluded_persons_sql,
    opt_out_version,
)
from hdh_pipelines.workspaces.audit import AuditRecord, append_audit_record
from hdh_pipelines.workspaces.datasets import EXTRACTABLE_DATASETS, PERSON_PSEUDONYM, ExtractableDataset
from hdh_pipelines.workspaces.documents import (
    PSEUDONYM_DESCRIPTIONS,
    REGULATORY_DIR,
    ColumnDoc,
    DatasetDoc,
    dictionary_csv,
    manifest_json,
    read_manifest,
    readme_markdown,
    write_regulatory_documents,
)
from hdh_pipelines.workspaces.errors import WorkspaceRefused
from hdh_pipelines.workspaces.projects import (
    Project,
    check_not_expired,
    check_regulatory_file,
    load_project,
    project_file,
)
from hdh_pipelines.workspaces.pseudonyms import install_project_key, key_fingerprint, load_project_key

WORKSPACE_FORMAT = "hdh-workspace/1"
STAGING_DIR = ".staging"


@dataclass(frozen=True)
class WorkspaceSettings:
    root: Path
    # Read-only, whichever engine built it (hdh_pipelines.normalisation.warehouse).
    warehouse: Warehouse
    projects_dir: Path
    audit_root: Path
    secrets_file: Path | None = None
    # dbt model -> column -> description, for the data dictionary.
    column_descriptions: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    memory_limit: str = "1GB"
    threads: int = 2


@dataclass(frozen=True)
class WorkspaceResult:
    project: Project
    path: Path
    manifest: dict
    datasets: list[DatasetDoc]
    record: AuditRecord


@dataclass(frozen=True)
class MonthPlan:
    extract: list[str]
    carry_over: list[str]
    outside_period: list[str]

    @property
    def present(self) -> list[str]:
        return sorted(set(self.extract) | set(self.carry_over))


def months_between(start: date, end: date) -> list[str]:
    months, year, month = [], start.year, start.month
    while (year, month) <= (end.year, end.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def plan_months(
    project: Project, requested: Sequence[str], previous: dict | None, signature: dict
) -> MonthPlan:
    """Months to extract now, months to carry over from the previous workspace, months refused as outside.

    When the approval's content or the project key changed since the previous
    workspace, its months cannot be carried over (other columns, other
    pseudonyms): they are extracted again too.
    """
    allowed = set(months_between(project.study_period.start, project.study_period.end))
    extract = set(requested) & allowed
    if not extract:
        raise WorkspaceRefused(
            "outside_study_period",
            f"None of the requested months ({', '.join(sorted(requested)) or 'none'}) lies in the study "
            f"period of project {project.id} ({project.study_period.start} to {project.study_period.end}).",
            project_id=project.id,
            field="study_period",
        )
    previous_months = set(previous["months"]) & allowed if previous else set()
    if previous and previous.get("signature") != signature:
        extract |= previous_months
    carry_over = previous_months - extract
    outside = set(requested) - allowed
    return MonthPlan(sorted(extract), sorted(carry_over), sorted(outside))


def materialise_workspace(
    settings: WorkspaceSettings,
    project_id: str,
    requested_months: Sequence[str],
    *,
    run_id: str,
    requester: str,
    today: date,
    environ: Mapping[str, str] = os.environ,
) -> WorkspaceResult:
    """Build and publish ``project_id``'s workspace for ``requested_months`` ('YYYY-MM'), or refuse.

    Every outcome is appended to the audit trail; a refusal or failure leaves
    the previous workspace, if any, untouched.
    """
    project: Project | None = None
    try:
        project = load_project(project_file(settings.projects_dir, project_id))
        check_not_expired(project, today)
        check_regulatory_file(project)
        key = load_project_key(project.id, settings.secrets_file, environ)
        with project_lock(settings.root, project.id):
            result = _build(
                settings, project, key, requested_months, run_id=run_id, requester=requester, today=today
            )
    except WorkspaceRefused as refusal:
        _audit_unbuilt(
            settings, project, project_id, run_id, requester, "refused", refusal.reason, refusal.message
        )
        raise
    except Exception as error:
        # The exception's text may quote data (a DuckDB error shows values): only its type is recorded.
        _audit_unbuilt(
            settings,
            project,
            project_id,
            run_id,
            requester,
            "failed",
            type(error).__name__,
            "The run failed.",
        )
        raise
    append_audit_record(settings.audit_root, result.record)
    return result


@contextmanager
def project_lock(root: Path, project_id: str) -> Iterator[None]:
    """One build per project at a time: a second run waits, then builds on the first one's workspace."""
    locks = make_private_dir(make_private_dir(root) / ".locks")
    with held_lock(locks / f"{project_id}.lock"):
        yield


def _audit_unbuilt(
    settings: WorkspaceSettings,
    project: Project | None,
    project_id: str,
    run_id: str,
    requester: str,
    outcome: str,
    reason: str,
    message: str,
) -> None:
    append_audit_record(
        settings.audit_root,
        AuditRecord(
            project=project_id,
            run_id=run_id,
            requester=requester,
            outcome=outcome,
            reason=reason,
            message=message,
            approval_references=project.approval_references() if project else {},
        ),
    )


def _sql_list(values: Sequence[str]) -> str:
    return ", ".join(quote_literal(v) for v in values) or "null"


class _Extraction:
    """One run's DuckDB session: the warehouse read-only as ``wh``, the project key, the population."""

    def __init__(self, settings: WorkspaceSettings, project: Project, key: bytes, spill_dir: Path):
        self.project = project
        self.descriptions = settings.column_descriptions
        self.connection = duckdb.connect(
            config={
                "memory_limit": settings.memory_limit,
                "threads": settings.threads,
                "temp_directory": str(spill_dir),
                "preserve_insertion_order": False,
            }
        )
        try:
            settings.warehouse.attach(self.connection, "wh")
        except duckdb.Error as error:
            self.connection.close()
            raise WorkspaceRefused(
                "warehouse_unavailable",
                f"The warehouse cannot be opened read-only ({type(error).__name__}); it may be missing or "
                "being rebuilt. Retry once the normalisation has finished.",
                project_id=project.id,
            ) from None
        install_project_key(self.connection, key)

    def close(self) -> None:
        self.connection.close()

    def has_table(self, schema: str, table: str) -> bool:
        return has_relation(self.connection, "wh", f"{schema}.{table}")

    def require_table(self, schema: str, table: str, reason: str, why: str) -> None:
        if not self.has_table(schema, table):
            raise WorkspaceRefused(
                reason, f"{schema}.{table} is not in the warehouse: {why}", project_id=self.project.id
            )

    def check_sources(self) -> None:
        """Every approved column exists; the opt-out registry and, if needed, the linkage are built."""
        self.require_table(
            *EXCLUSIONS_TABLE.split("."),
            "opt_out_registry_missing",
            "no workspace is built without the opt-out registry applied; build the normalisation first.",
        )
        self.require_table(
            *OPT_OUT_STAGING_TABLE.split("."),
            "opt_out_registry_missing",
            "its version must be recorded in the audit trail.",
        )
        for name, columns in self.project.datasets.items():
            dataset = EXTRACTABLE_DATASETS[name]
            if dataset.requires_linkage:
                self.require_table(
                    "linkage",
                    "links",
                    "linkage_not_built",
                    "the linked cohort cannot be extracted before linkage.",
                )
            try:
                available = {
                    row[0]
                    for row in self.connection.execute(
                        f"describe select * from {dataset.source_sql} as src"
                    ).fetchall()
                }
            except duckdb.CatalogException:
                raise WorkspaceRefused(
                    "source_not_built",
                    f"The source of dataset {name} ({dataset.model}) is not in the warehouse; "
                    "build it first.",
                    project_id=self.project.id,
                ) from None
            unknown = sorted(set(columns) - available)
            if unknown:
                raise WorkspaceRefused(
                    "unknown_column",
                    f"Dataset {name} has no column {', '.join(unknown)}: correct the project file.",
                    project_id=self.project.id,
                    field=f"datasets.{name}",
                )

    def create_population(self) -> int:
        """The approved population minus every person on the opt-out registry, with project pseudonyms."""
        population = self.project.population
        if population.predicate is not None:
            # The predicate was checked to read only the marts (projects.check_population_predicate).
            self.connection.execute("set search_path = 'wh.marts'")
            selected = f"select ben_idt_ano from wh.marts.persons as persons where ({population.predicate})"
        else:
            for algorithm in population.algorithms:
                self.require_table(
                    "algorithms",
                    algorithm,
                    "algorithm_not_built",
                    "build the cohort-targeting algorithm first.",
                )
            period = self.project.study_period
            found = " union ".join(
                f"select ben_idt_ano from wh.algorithms.{name} "
                f"where year between {period.start.year} and {period.end.year}"
                for name in population.algorithms
            )
            selected = f"select ben_idt_ano from wh.marts.persons where ben_idt_ano in ({found})"
        try:
            self.connection.execute(
                f"""
                create temp table population as
                select ben_idt_ano, project_pseudonym('person', ben_idt_ano) as {PERSON_PSEUDONYM}
                from (select distinct ben_idt_ano from ({selected}) where ben_idt_ano is not null) as selected
                anti join ({excluded_persons_sql("wh")}) as opted_out using (ben_idt_ano)
                """
            )
        except duckdb.Error as error:
            raise WorkspaceRefused(
                "invalid_population",
                f"The population of project {self.project.id} cannot be selected: {type(error).__name__}. "
                "Check its predicate against the marts' columns.",
                project_id=self.project.id,
                field="population",
            ) from None
        return self.connection.execute("select count(*) from population").fetchone()[0]

    def opted_out_since(self, previous_files: list[str]) -> int:
        """Persons of the previous workspace whom the opt-out registry now excludes."""
        if not previous_files:
            return 0
        return self.connection.execute(
            f"""
            select count(distinct previous.{PERSON_PSEUDONYM})
            from read_parquet([{_sql_list(previous_files)}], union_by_name = true) as previous
            where previous.{PERSON_PSEUDONYM} in (
                select project_pseudonym('person', ben_idt_ano) from ({excluded_persons_sql("wh")})
            )
            """
        ).fetchone()[0]

    def source_deliveries(self, dataset: ExtractableDataset) -> list[str]:
        deliveries: set[str] = set()
        for table in dataset.staging_sources:
            if self.has_table("staging", table):
                deliveries |= {
                    row[0]
                    for row in self.connection.execute(
                        f"select distinct hdh_provider || '/' || hdh_delivery_id from wh.staging.{table}"
                    ).fetchall()
                }
        return sorted(deliveries)

    def extract(
        self, dataset: ExtractableDataset, plan: MonthPlan, previous: Path | None, staging: Path
    ) -> DatasetDoc:
        columns = self.project.datasets[dataset.name]
        outputs = [f"population.{PERSON_PSEUDONYM}"]
        outputs += [
            f"project_pseudonym('{p.domain}', concat_ws(chr(31), "
            + ", ".join(f"src.{c}::varchar" for c in p.source_columns)
            + f")) as {p.column}"
            for p in dataset.record_pseudonyms
        ]
        outputs += [f'src."{c}"' for c in columns]
        names = [f'"{c}"' for c in (*dataset.pseudonym_columns, *columns)]
        joined = f"{dataset.source_sql} as src inner join population using (ben_idt_ano)"
        view = f"extract_{dataset.name}"
        if dataset.period_column is None:
            self.connection.execute(f"create temp view {view} as select {', '.join(outputs)} from {joined}")
            target = staging / "parquet" / f"{dataset.name}.parquet"
            rows = self.connection.execute(
                f"copy {view} to {quote_literal(str(target))} (format parquet)"
            ).fetchone()[0]
            return DatasetDoc(dataset.name, rows, self._column_docs(dataset, view), [])

        period_date = f"src.{dataset.period_column}"
        period = self.project.study_period
        query = (
            f"select {', '.join(outputs)}, strftime({period_date}, '%Y-%m') as month from {joined} "
            f"where {period_date} between date '{period.start}' and date '{period.end}' "
            f"and strftime({period_date}, '%Y-%m') in ({_sql_list(plan.extract)})"
        )
        carried = previous / "parquet" / dataset.name if previous else None
        if plan.carry_over and carried and any(carried.glob("month=*/*.parquet")):
            # Months kept from the previous workspace lose every person no longer in the population:
            # that is what makes an opt-out retroactive.
            query += (
                f" union all by name select {', '.join(names)}, month from read_parquet("
                f"{quote_literal(str(carried / 'month=*' / '*.parquet'))}, "
                f"hive_partitioning = true, hive_types = {{'month': varchar}}) "
                f"where month in ({_sql_list(plan.carry_over)}) "
                f"and {PERSON_PSEUDONYM} in (select {PERSON_PSEUDONYM} from population)"
            )
        self.connection.execute(f"create temp view {view} as {query}")
        target = staging / "parquet" / dataset.name
        self.connection.execute(
            f"copy {view} to {quote_literal(str(target))} (format parquet, partition_by (month))"
        )
        by_month = (
            dict(
                self.connection.execute(
                    "select month, count(*) from read_parquet("
                    f"{quote_literal(str(target / 'month=*' / '*.parquet'))}, "
                    "hive_partitioning = true, hive_types = {'month': varchar}) group by month order by month"
                ).fetchall()
            )
            if any(target.glob("month=*/*.parquet"))
            else {}
        )
        return DatasetDoc(
            dataset.name, sum(by_month.values()), self._column_docs(dataset, view), sorted(by_month)
        )

    def _column_docs(self, dataset: ExtractableDataset, view: str) -> list[ColumnDoc]:
        selected = (
            f"select * exclude (month) from {view}" if dataset.period_column else f"select * from {view}"
        )
        described = self.connection.execute(f"describe {selected}").fetchall()
        docs = self.descriptions.get(dataset.model, {})
        return [
            ColumnDoc(name, column_type, PSEUDONYM_DESCRIPTIONS.get(name) or docs.get(name, ""))
            for name, column_type, *_ in described
        ]

    def write_duckdb(self, datasets: list[DatasetDoc], staging: Path) -> None:
        target = staging / "workspace.duckdb"
        self.connection.execute(f"attach {quote_literal(str(target))} as out")
        for doc in datasets:
            dataset = EXTRACTABLE_DATASETS[doc.name]
            view = f"extract_{doc.name}"
            if dataset.period_column is None:
                source = f"read_parquet({quote_literal(str(staging / 'parquet' / f'{doc.name}.parquet'))})"
            elif doc.rows:
                glob = staging / "parquet" / doc.name / "month=*" / "*.parquet"
                source = f"read_parquet({quote_literal(str(glob))}, hive_partitioning = false)"
            else:
                source = f"(select * exclude (month) from {view} limit 0)"
            self.connection.execute(f"create table out.{doc.name} as select * from {source}")
        self.connection.execute("detach out")


def warehouse_record(warehouse: Warehouse) -> dict[str, str]:
    """The warehouse a copy was made from, as its manifest records it."""
    state = warehouse.state()
    return {"engine": state.engine, "name": state.name, "modified_at": state.modified_at.isoformat()}


def _previous_files(previous: Path | None) -> list[str]:
    if previous is None:
        return []
    return [str(path) for path in sorted((previous / "parquet").glob("**/*.parquet"))]


def _build(
    settings: WorkspaceSettings,
    project: Project,
    key: bytes,
    requested_months: Sequence[str],
    *,
    run_id: str,
    requester: str,
    today: date,
) -> WorkspaceResult:
    root = make_private_dir(settings.root)
    target = root / project.id
    previous_manifest = read_manifest(target)
    previous = target if previous_manifest else None
    signature = {
        "format": WORKSPACE_FORMAT,
        "content_digest": project.content_digest(),
        "key_fingerprint": key_fingerprint(key),
    }
    plan = plan_months(project, requested_months, previous_manifest, signature)

    staging_root = make_private_dir(root / STAGING_DIR)
    for leftover in staging_root.glob(f"{project.id}.*"):
        # A killed run's leftovers, or an older workspace moved aside: never visible, safe to remove.
        shutil.rmtree(leftover, ignore_errors=True)
    staging = make_private_dir(staging_root / f"{project.id}.{uuid.uuid4().hex}")
    spill = staging_root / f"{staging.name}.spill"
    try:
        make_private_dir(staging / "parquet")
        extraction = _Extraction(settings, project, key, spill)
        try:
            extraction.check_sources()
            persons = extraction.create_population()
            opt_out = opt_out_version(extraction.connection, "wh")
            removed = extraction.opted_out_since(_previous_files(previous))
            datasets = [
                extraction.extract(EXTRACTABLE_DATASETS[name], plan, previous, staging)
                for name in project.datasets
            ]
            deliveries = {
                name: extraction.source_deliveries(EXTRACTABLE_DATASETS[name]) for name in project.datasets
            }
            if "duckdb" in project.output_formats:
                extraction.write_duckdb(datasets, staging)
        finally:
            extraction.close()
        generated_at = datetime.now(UTC).isoformat(timespec="seconds")
        manifest = {
            "format": WORKSPACE_FORMAT,
            "project": project.id,
            "title": project.title,
            "lead": project.lead,
            "purpose": project.purpose,
            "generated_at": generated_at,
            "run_id": run_id,
            "requester": requester,
            "signature": signature,
            "approval_references": project.approval_references(),
            "controller": project.regulatory.controller,
            "retention_until": str(project.regulatory.retention.until),
            "study_period": {"start": str(project.study_period.start), "end": str(project.study_period.end)},
            "expires_on": str(project.expires_on),
            "linkage_approved": project.linkage_approved,
            "population": {
                "definition": project.population.model_dump(exclude_none=True),
                "persons": persons,
            },
            "months": plan.present,
            "months_extracted": plan.extract,
            "months_carried_over": plan.carry_over,
            "months_outside_period_ignored": plan.outside_period,
            "opt_out_registry_version": opt_out,
            "warehouse": warehouse_record(settings.warehouse),
            "datasets": {
                doc.name: {
                    "source": EXTRACTABLE_DATASETS[doc.name].model,
                    "rows": doc.rows,
                    "months_with_rows": doc.months,
                    "columns": [column.name for column in doc.columns],
                    "source_deliveries": deliveries[doc.name],
                }
                for doc in datasets
            },
            "output_formats": project.output_formats,
        }
        write_private_file(staging / "manifest.json", manifest_json(manifest))
        write_private_file(staging / "data_dictionary.csv", dictionary_csv(datasets).encode())
        write_private_file(staging / "README.md", readme_markdown(datasets, manifest).encode())
        write_regulatory_documents(make_private_dir(staging / REGULATORY_DIR), project, today)
        # DuckDB creates files with the process umask.
        make_tree_owner_only(staging)
        swap_in(staging, target)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)

    record = AuditRecord(
        project=project.id,
        run_id=run_id,
        requester=requester,
        outcome="materialised",
        datasets=list(project.datasets),
        row_counts={doc.name: doc.rows for doc in datasets},
        months_extracted=plan.extract,
        months_carried_over=plan.carry_over,
        population_persons=persons,
        opted_out_persons_removed=removed,
        approval_references=project.approval_references(),
        opt_out_registry_version=opt_out,
        project_content_digest=signature["content_digest"],
        key_fingerprint=signature["key_fingerprint"],
    )
    return WorkspaceResult(project, target, manifest, datasets, record)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code), str(first))


def swap_in(staged: Path, target: Path) -> None:
    """Publish ``staged`` as ``target``; readers see the old workspace or the new one, never a mix.

    After the exchange ``staged`` holds the old workspace, which the caller
    removes. Without renameat2, the old one is moved aside first: a crash
    between the two renames leaves the project with no workspace (the next
    run publishes one), never half of one.
    """
    if not target.exists():
        os.rename(staged, target)
        return
    if _exchange(staged, target):
        return
    aside = staged.with_name(staged.name + ".replaced")
    os.rename(target, aside)
    os.rename(staged, target)
    shutil.rmtree(aside, ignore_errors=True)
