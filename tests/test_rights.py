"""People's rights end to end on a small population: signed requests dropped in a real intake folder, the
real sensor and job on a real Dagster instance, real dbt for the opt-out models and the marts, a real
workspace rebuilt, real refusal records. Planted population (built here, not by the demo generator):

- ``a`` opposes through the form, then withdraws: out of the marts and the workspace, then back;
- ``n`` is on the national registry and withdraws through the form: stays excluded (the registry's);
- ``b`` asks which projects received their data: the letter names the project;
- ``c`` (born after the project's population limit) asks too: the letter names none.
"""

import json
import os
import secrets
import stat
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ed25519
from dagster_dbt import DbtCliResource
from dbt_inputs import ben, claim, opt_out, psa, query, run_dbt, write_raw

from hdh_deliver.keys import public_pem
from hdh_pipelines.catalogue.resources import CatalogueResource
from hdh_pipelines.ingestion.resources import HubResource
from hdh_pipelines.normalisation.assets import normalisation_assets
from hdh_pipelines.normalisation.resources import WarehouseResource, dbt_project
from hdh_pipelines.rights.assets import (
    DEADLINE_CHECK,
    rights_assets,
    rights_request_job,
    rights_request_sensor,
    rights_requests,
)
from hdh_pipelines.rights.process import RegisterRefused, close_request, extend_deadline
from hdh_pipelines.rights.requests import signed_request
from hdh_pipelines.rights.resources import RightsResource
from hdh_pipelines.rights.store import RightsStore
from hdh_pipelines.workspaces import WorkspaceRefused, materialise_workspace, read_audit_trail
from hdh_pipelines.workspaces.assets import project_workspace
from hdh_pipelines.workspaces.documents import REGULATORY_DOCUMENTS
from hdh_pipelines.workspaces.pseudonyms import install_project_key
from hdh_pipelines.workspaces.resources import WorkspaceResource

REPO = Path(__file__).resolve().parents[1]
PROJECT = "rights-cohort-study"
FORM = "website"


class Hub:
    def __init__(self, folder: Path):
        self.folder = folder
        self.private = folder / "private"
        self.raw = self.private / "raw"
        self.warehouse = self.private / "warehouse.duckdb"
        self.intake = folder / "intake"
        self.intake.mkdir()
        self.store = RightsStore.under(self.private)
        self.form_key = ed25519.Ed25519PrivateKey.generate()
        self.forms = folder / "forms.yaml"
        self.forms.write_text(
            yaml.safe_dump(
                {
                    "providers": {
                        FORM: {
                            "name": "Hub website",
                            "signing_keys": [{"pem": public_pem(self.form_key.public_key()).decode()}],
                        }
                    }
                }
            )
        )
        self.projects = folder / "projects"
        self.projects.mkdir()
        document = yaml.safe_load((REPO / "projects" / "diabetes-drug-use.yaml").read_text())
        document |= {
            "id": PROJECT,
            "title": "Suivi d'une cohorte de test",
            "datasets": {
                "persons": ["sex_code", "birth_year"],
                "claims": ["care_start_date", "amount_reimbursed"],
            },
            "population": {"predicate": "persons.birth_year < 1990"},
            "study_period": {"start": "2025-01-01", "end": "2025-12-31"},
        }
        (self.projects / f"{PROJECT}.yaml").write_text(yaml.safe_dump(document, allow_unicode=True))
        self.key = secrets.token_bytes(32)
        self.secrets = folder / "workspace-secrets.yaml"
        self.secrets.write_text(yaml.safe_dump({"projects": {PROJECT: self.key.hex()}}))
        self.secrets.chmod(0o600)
        self.workspaces = WorkspaceResource(
            root=str(folder / "workspaces"),
            warehouse=WarehouseResource(path=str(self.warehouse)),
            projects_dir=str(self.projects),
            audit_root=str(folder / "audit"),
            secrets_file=str(self.secrets),
        )
        self.resources = {
            "rights": RightsResource(intake_dir=str(self.intake), forms_registry_file=str(self.forms)),
            "catalogue": CatalogueResource(
                output_dir=str(folder / "catalogue"), open_data_dir=str(folder / "open")
            ),
            "hub": HubResource(
                private_root=str(self.private),
                keyring_file=str(folder / "unused-keyring.yaml"),
                provider_registry_file=str(folder / "unused-providers.yaml"),
            ),
            "workspaces": self.workspaces,
            "dbt": DbtCliResource(project_dir=dbt_project),
            "warehouse": WarehouseResource(path=str(self.warehouse)),
        }
        self.defs = dg.Definitions(
            assets=[*rights_assets, *normalisation_assets, project_workspace],
            jobs=[rights_request_job],
            sensors=[rights_request_sensor],
            resources=self.resources,
        )
        self.sequence = 0

    def submit(
        self, kind: str, tag: str, *, rank: int = 1, created_at=None, nonce=None, key=None, **extra
    ) -> str:
        self.sequence += 1
        request_id = extra.pop("request_id", f"R-{self.sequence:04d}")
        document, signature = signed_request(
            form=FORM,
            signing_key=key or self.form_key,
            request_id=request_id,
            nonce=nonce or secrets.token_hex(16),
            created_at=created_at or datetime.now(UTC),
            request_type=kind,
            ben_nir_psa=psa(tag),
            ben_rng_gem=rank,
            reply_reference=f"account-{tag}-{self.sequence}",
            **extra,
        )
        (self.intake / f"{request_id}.json").write_bytes(document)
        (self.intake / f"{request_id}.json.sig").write_bytes(signature)
        return request_id

    def tick_and_run(
        self, instance: dg.DagsterInstance, *, opt_outs: bool = False
    ) -> dg.ExecuteInProcessResult:
        """One sensor tick and its run: the whole job if ``opt_outs`` (it runs dbt), else its first asset."""
        context = dg.build_sensor_context(instance=instance, resources={"rights": self.resources["rights"]})
        (request,) = rights_request_sensor(context).run_requests
        if opt_outs:
            result = self.defs.resolve_job_def("rights_request_job").execute_in_process(
                instance=instance, tags=request.tags, raise_on_error=False
            )
        else:
            result = dg.materialize(
                [rights_requests], instance=instance, resources=self.resources, tags=request.tags
            )
        assert result.success
        return result

    def requests_metadata(self, result) -> dict:
        return {
            k: v.value
            for k, v in result.asset_materializations_for_node("rights__requests")[0].metadata.items()
        }

    def rebuild_marts(self) -> None:
        run_dbt(
            "build",
            "--select",
            "persons",
            "claims",
            "--exclude-resource-type",
            "test",
            warehouse=self.warehouse,
            raw_root=self.raw,
            target=self.folder / "target",
        )

    def workspace_run(self, instance: dg.DagsterInstance) -> None:
        instance.add_dynamic_partitions("projects", [PROJECT])
        result = dg.materialize(
            [project_workspace],
            instance=instance,
            resources={"workspaces": self.workspaces},
            partition_key=str(dg.MultiPartitionKey({"project": PROJECT, "month": "2025-01-01"})),
        )
        assert result.success

    def workspace_has(self, tag: str) -> bool:
        identity = f"{psa(tag)}1"  # BEN_IDT_ANO of a person without a NIR of their own: BEN_NIR_PSA || rank
        with duckdb.connect() as connection:
            install_project_key(connection, self.key)
            return bool(
                connection.execute(
                    "select count(*) from read_parquet($file) "
                    "where person_id = project_pseudonym('person', $id)",
                    {
                        "file": str(self.folder / "workspaces" / PROJECT / "parquet" / "persons.parquet"),
                        "id": identity,
                    },
                ).fetchone()[0]
            )


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Hub:
    hub = Hub(tmp_path_factory.mktemp("rights"))
    write_raw(
        hub.raw,
        "IR_BEN_R",
        [
            ben(t, "1", year=y)
            for t, y in (("a", "1960"), ("b", "1970"), ("c", "1995"), ("n", "1980"), ("z", "1975"))
        ],
    )
    write_raw(
        hub.raw, "ER_PRS_F", [claim(i, "2025-02-01", t, "1", "2025-01-15") for i, t in enumerate("abcnz", 1)]
    )
    write_raw(hub.raw, "OPT_OUT", [opt_out("n", "1", "2024-06-01")])
    run_dbt(
        "build",
        "--select",
        "+persons",
        "+claims",
        "--exclude-resource-type",
        "test",
        warehouse=hub.warehouse,
        raw_root=hub.raw,
        target=hub.folder / "target",
    )
    with pytest.MonkeyPatch.context() as patch:
        # dbt, run by the Dagster job, finds the warehouse and the raw root in the environment.
        patch.setenv("HDH_WAREHOUSE_PATH", str(hub.warehouse))
        patch.setenv("HDH_RAW_ROOT", str(hub.raw))
        yield hub


@pytest.fixture(scope="module")
def instance(hub):
    with dg.instance_for_test() as instance:
        hub.workspace_run(instance)
        yield instance


def _exclusions(hub: Hub) -> dict[str, str]:
    rows = query(hub.warehouse, "select ben_nir_psa, source from intermediate.int_opt_out_exclusions")
    return {pseudonym.rstrip("0"): source for pseudonym, source in rows}


def test_an_opposition_leaves_the_marts_and_a_rebuilt_workspace_at_once(hub, instance):
    assert hub.workspace_has("a") and hub.workspace_has("z")
    # The data user's regulatory documents sit in the workspace, owner-only.
    documents = sorted((hub.folder / "workspaces" / PROJECT / "regulatory").iterdir())
    assert [p.name for p in documents] == sorted(REGULATORY_DOCUMENTS)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in documents)
    hub.submit("opposition", "a")
    result = hub.tick_and_run(instance, opt_outs=True)
    assert hub.requests_metadata(result)["accepted_opposition"] == 1
    assert _exclusions(hub) == {"a": "rights_request", "n": "national_registry"}
    # The opt-out source row is owner-only, in the folder dbt reads beside the raw root.
    (row_file,) = (hub.private / "rights" / "oppositions").glob("*.parquet")
    assert stat.S_IMODE(row_file.stat().st_mode) == 0o600
    hub.rebuild_marts()
    assert not query(hub.warehouse, "select * from marts.persons where ben_idt_ano like 'a%'")
    assert not query(hub.warehouse, "select * from marts.claims where ben_nir_psa = ?", [psa("a")])
    hub.workspace_run(instance)
    assert not hub.workspace_has("a") and hub.workspace_has("z")
    assert read_audit_trail(Path(hub.workspaces.audit_root), PROJECT)[-1]["opted_out_persons_removed"] == 1


def test_a_withdrawal_ends_the_persons_own_opposition_only(hub, instance):
    # Follows the opposition above (same module population): a opposed through the form, n is national.
    assert _exclusions(hub) == {"a": "rights_request", "n": "national_registry"}
    hub.submit("withdrawal", "a")
    hub.submit("withdrawal", "n")
    result = hub.tick_and_run(instance, opt_outs=True)
    assert hub.requests_metadata(result)["accepted_withdrawal"] == 2
    # Only the form's own opposition is withdrawn: n stays on the national registry (a's next marts
    # and workspace builds read this model, as above).
    assert _exclusions(hub) == {"n": "national_registry"}
    # Applied requests are closed at once.
    assert {e["status"] for e in hub.store.entries() if e["type"] in ("opposition", "withdrawal")} == {
        "closed"
    }


def test_access_request_is_answered_with_a_french_letter_from_the_audit_trail(hub, instance):
    in_project, outside = hub.submit("access", "b"), hub.submit("access", "c")
    result = hub.tick_and_run(instance)
    metadata = hub.requests_metadata(result)
    assert metadata["accepted_access"] == 2 and metadata["letters_prepared"] == 2
    # Counts only: no pseudonym, request id or reply reference reaches Dagster.
    shown = json.dumps({k: str(v) for k, v in metadata.items()})
    assert psa("b") not in shown and in_project not in shown and "account-" not in shown
    letter = hub.store.letter_file(in_project)
    assert stat.S_IMODE(letter.stat().st_mode) == 0o600
    text = letter.read_text()
    assert '<html lang="fr">' in text and "Suivi d&#x27;une cohorte de test" in text
    assert "Université de Valmont" in text and "DR-2026-097" in text
    assert date.today().strftime("%d/%m/%Y") in text
    assert "aucun projet" in hub.store.letter_file(outside).read_text()
    entry = hub.store.entry(in_project)
    assert (entry["status"], entry["outcome"]) == ("open", "letter_ready")
    assert close_request(hub.store, in_project, "letter_sent", date.today())["status"] == "closed"


def _deadline_check(hub: Hub, instance, as_of: date) -> dg.AssetCheckEvaluation:
    result = dg.materialize(
        [a for a in rights_assets if a.key.path == ["rights", "open_requests"]],
        instance=instance,
        resources={"hub": hub.resources["hub"]},
        run_config={"ops": {"rights__open_requests": {"config": {"as_of": as_of.isoformat()}}}},
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == DEADLINE_CHECK
    return evaluation


def test_an_overdue_request_fails_its_check_until_its_deadline_is_extended_with_a_reason(hub, instance):
    question = hub.submit("question", "z", question="Quelles données me concernent ?")
    hub.tick_and_run(instance)
    entry = hub.store.entry(question)
    assert (entry["status"], entry["type"]) == ("open", "question")
    today = date.today()
    assert _deadline_check(hub, instance, today).passed
    late = _deadline_check(hub, instance, today + timedelta(days=40))
    assert not late.passed and late.metadata["overdue"].value >= 1
    with pytest.raises(RegisterRefused) as refused:
        extend_deadline(hub.store, question, " ")
    assert refused.value.reason == "no_reason"
    for entry in hub.store.entries():
        if entry["status"] == "open":
            extend_deadline(
                hub.store, entry["request_id"], "Question complexe : recherche dans les archives."
            )
    assert _deadline_check(hub, instance, today + timedelta(days=40)).passed
    assert not _deadline_check(hub, instance, today + timedelta(days=100)).passed
    page = (hub.private / "rights" / "open_requests.html").read_text()
    assert question in page and "recherche dans les archives" in page


def test_forged_and_replayed_requests_are_refused_with_their_reasons(hub, instance):
    before = set((hub.private / "rights" / "oppositions").glob("*.parquet"))
    forged = hub.submit("opposition", "z")
    (hub.intake / f"{forged}.json").write_bytes(
        (hub.intake / f"{forged}.json").read_bytes().replace(psa("z").encode(), psa("b").encode())
    )
    hub.submit("opposition", "z", key=ed25519.Ed25519PrivateKey.generate())
    hub.submit("opposition", "z", created_at=datetime.now(UTC) - timedelta(days=4))
    original = hub.submit("access", "z", nonce="ab" * 16)
    result = hub.tick_and_run(instance)
    assert hub.requests_metadata(result)["accepted_access"] == 1
    # The same signed request again, then a new request reusing its nonce.
    received = hub.private / "rights" / "received"
    for suffix in (".json", ".json.sig"):
        (hub.intake / f"{original}{suffix}").write_bytes((received / f"{original}{suffix}").read_bytes())
    hub.submit("opposition", "z", nonce="ab" * 16)
    replayed = hub.requests_metadata(hub.tick_and_run(instance))

    refusals = hub.store.refusals()
    reasons = sorted(r["reason"] for r in refusals)
    assert reasons == sorted(
        ["bad_signature", "unknown_key", "outside_time_window", "replayed_request", "replayed_nonce"]
    )
    assert all(r["message"] and psa("z") not in r["message"] for r in refusals)
    assert replayed["refused_replayed_request"] == 1 and replayed["refused_replayed_nonce"] == 1
    # Nothing refused was applied, and the intake is empty again.
    assert set((hub.private / "rights" / "oppositions").glob("*.parquet")) == before
    assert "z" not in _exclusions(hub)
    assert not list(hub.intake.iterdir())
    assert all(
        stat.S_IMODE(p.stat().st_mode) == 0o700 for p in (hub.private / "rights" / "refused").iterdir()
    )


def test_sensor_skips_an_empty_or_incomplete_intake(hub, instance):
    context = dg.build_sensor_context(instance=instance, resources={"rights": hub.resources["rights"]})
    assert isinstance(rights_request_sensor(context), dg.SkipReason)
    (hub.intake / "R-9999.json").write_bytes(b"{}")  # the form writes the signature last
    assert isinstance(rights_request_sensor(context), dg.SkipReason)
    os.remove(hub.intake / "R-9999.json")


def test_a_project_whose_route_lacks_a_reference_gets_no_workspace(hub, instance):
    document = yaml.safe_load((hub.projects / f"{PROJECT}.yaml").read_text())
    document["id"] = "awaiting-cnil"
    del document["regulatory"]["cnil_authorisation"]
    (hub.projects / "awaiting-cnil.yaml").write_text(yaml.safe_dump(document, allow_unicode=True))
    settings = hub.workspaces.settings()
    try:
        with pytest.raises(WorkspaceRefused) as refused:
            materialise_workspace(
                settings, "awaiting-cnil", ["2025-01"], run_id="t", requester="t", today=date.today()
            )
    finally:
        (hub.projects / "awaiting-cnil.yaml").unlink()
    assert (refused.value.reason, refused.value.field) == (
        "regulatory_file_incomplete",
        "regulatory.cnil_authorisation",
    )
    assert not (settings.root / "awaiting-cnil").exists()
    refusal = read_audit_trail(settings.audit_root, "awaiting-cnil")[-1]
    assert (refusal["outcome"], refusal["reason"]) == ("refused", "regulatory_file_incomplete")
