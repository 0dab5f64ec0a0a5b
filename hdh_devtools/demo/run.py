"""``hdh-demo``: the hub's lifecycle on embedded defaults, end to end.

Creates hub and provider keys, generates a synthetic SNDS-like population,
starts a private OpenSSH SFTP server on loopback, delivers the data with the
provider command (plus deliberately bad deliveries: tampered, unsigned by a
known key, failing its quality suite), runs the Dagster sensor and the
ingestion runs, then the nightly job over the data's months (dbt
normalisation, catalogue…) against a persistent Dagster instance, and prints
a summary. Everything lives under one work folder, recreated on each
run, so the demo can be repeated and inspected afterwards in the Dagster UI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import yaml

from hdh_deliver.keys import generate_hub_key, generate_provider_key
from hdh_devtools.sftp_server import SftpServer, start_sftp_server
from hdh_pipelines.core.constants import REQUESTER_TAG
from hdh_pipelines.core.disclosure import DISCLOSURE_THRESHOLD
from hdh_pipelines.core.sql import quote_literal
from hdh_pipelines.workspaces.pseudonyms import key_variable

REPO = Path(__file__).resolve().parents[2]
PROVIDER = "cnam"
COHORT_PROVIDER = "chu-cohort"
# Runs log to the Dagster instance, where the UI shows them; the demo prints its own
# account of each run, so the console logger only reports what would be a crash.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _deliver(
    env: dict[str, str],
    provider: str,
    delivery_id: str,
    files: dict[str, Path],
    keys: Path,
    signing_key: Path,
) -> None:
    """Run the provider command exactly as a provider would."""
    command = [
        str(Path(sys.executable).with_name("hdh-deliver")),
        "--provider",
        provider,
        "--delivery-id",
        delivery_id,
        "--hub-public-key",
        str(keys / "hub.pub.pem"),
        "--signing-key",
        str(signing_key),
    ]
    for dataset, path in files.items():
        command += ["--file", f"{dataset}={path}"]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)


def _setup_keys(work: Path) -> tuple[Path, dict[str, Path]]:
    keys = work / "keys"
    hub = generate_hub_key(keys / "hub", bits=3072)
    shutil.copy(hub.public_key_file, keys / "hub.pub.pem")
    signing = {
        name: generate_provider_key(keys / name) for name in (PROVIDER, COHORT_PROVIDER, "unregistered")
    }
    keyring = keys / "hub-keyring.yaml"
    keyring.write_text(yaml.safe_dump({"keys": [{"file": str(hub.private_key_file)}]}))
    providers = keys / "providers.yaml"
    providers.write_text(
        yaml.safe_dump(
            {
                "providers": {
                    PROVIDER: {
                        "name": "Caisse nationale de l'Assurance Maladie (synthetic)",
                        "signing_keys": [{"file": str(signing[PROVIDER].public_key_file)}],
                    },
                    COHORT_PROVIDER: {
                        "name": "University hospital research cohort (synthetic)",
                        "signing_keys": [{"file": str(signing[COHORT_PROVIDER].public_key_file)}],
                    },
                }
            }
        )
    )
    return keys, {name: key.private_key_file for name, key in signing.items()}


def _submit_rights_requests(work: Path, keys: Path, ir_ben_r: Path) -> dict[str, str]:
    """One request of each type from the hub's form (docs/rights.md), for persons of the population."""
    from datetime import UTC, datetime

    from hdh_deliver.keys import load_private_key
    from hdh_pipelines.rights.requests import REQUEST_TYPES, signed_request

    form = generate_provider_key(keys / "rights-form")
    (keys / "rights-forms.yaml").write_text(
        yaml.safe_dump({"providers": {"website": {"signing_keys": [{"file": str(form.public_key_file)}]}}})
    )
    # Its own connection: the module-level default one may hold another caller's pending result.
    with duckdb.connect() as connection:
        persons = connection.execute(
            f"select BEN_NIR_PSA, BEN_RNG_GEM from read_csv({quote_literal(str(ir_ben_r))}, delim = ';', "
            "header = true, all_varchar = true) order by BEN_NIR_PSA limit 3"
        ).fetchall()
    people = {
        "opposition": persons[0],
        "withdrawal": persons[1],
        "access": persons[2],
        "question": persons[2],
    }
    intake = work / "rights-intake"
    intake.mkdir(exist_ok=True)
    submitted = {}
    for number, kind in enumerate(REQUEST_TYPES, 1):
        request_id = f"demo-{number:03d}-{kind}"
        document, signature = signed_request(
            form="website",
            signing_key=load_private_key(form.private_key_file),
            request_id=request_id,
            nonce=secrets.token_hex(16),
            created_at=datetime.now(UTC),
            request_type=kind,
            ben_nir_psa=people[kind][0],
            ben_rng_gem=int(people[kind][1]),
            reply_reference=f"demo-account-{number:03d}",
            question="Mes données servent-elles à des études ?" if kind == "question" else None,
        )
        (intake / f"{request_id}.json").write_bytes(document)
        (intake / f"{request_id}.json.sig").write_bytes(signature)
        submitted[kind] = request_id
    return submitted


def _with_duplicate_key(csv_path: Path, target: Path) -> Path:
    """A copy of a CSV delivery whose first data row appears twice: a duplicate primary key."""
    lines = csv_path.read_text(encoding="utf-8").splitlines(keepends=True)
    target.write_text("".join([*lines, lines[1]]), encoding="utf-8")
    return target


def _hub_environment(work: Path, server: SftpServer, keys: Path, year: int) -> dict[str, str]:
    return {
        "DAGSTER_HOME": str(work / "dagster_home"),
        "HDH_SFTP_HOST": server.host,
        "HDH_SFTP_PORT": str(server.port),
        "HDH_SFTP_USER": server.user,
        "HDH_SFTP_KEY_FILE": str(server.client_key),
        "HDH_SFTP_KNOWN_HOSTS": str(server.known_hosts),
        "HDH_SFTP_INBOX": str(server.inbox),
        "HDH_PRIVATE_ROOT": str(work / "private"),
        "HDH_HUB_KEYRING": str(keys / "hub-keyring.yaml"),
        "HDH_PROVIDER_REGISTRY": str(keys / "providers.yaml"),
        "HDH_WAREHOUSE_PATH": str(work / "private" / "warehouse.duckdb"),
        "HDH_RAW_ROOT": str(work / "private" / "raw"),
        "HDH_CATALOGUE_DIR": str(work / "public" / "catalogue"),
        # PMSI stays of a year may start in the December before it.
        "HDH_FIRST_MONTH": f"{year - 1}-12-01",
        "HDH_WORKSPACE_ROOT": str(work / "private" / "workspaces"),
        "HDH_WORKSPACE_AUDIT_ROOT": str(work / "private" / "audit"),
        "HDH_PROJECTS_DIR": str(REPO / "projects"),
        "HDH_LINKAGE_ROOT": str(work / "private" / "linkage"),
        # A few thousand persons: Spark's settings for small inputs (its defaults are for real volumes).
        "HDH_SPARK_SMALL_INPUTS": "true",
        "HDH_INDICATOR_ROOT": str(work / "public" / "indicators"),
        "HDH_INDICATOR_LOG": str(work / "private" / "indicator-requests.jsonl"),
        "HDH_OPEN_DATA_DIR": str(work / "public" / "open-data"),
        "HDH_CHALLENGE_ROOT": str(work / "private" / "challenges"),
        "HDH_CHALLENGE_KEY": secrets.token_hex(32),
        "HDH_RIGHTS_INTAKE": str(work / "rights-intake"),
        "HDH_RIGHTS_FORMS": str(keys / "rights-forms.yaml"),
        # One secret per project, made for this demo: project pseudonyms cannot be joined across projects.
        **{key_variable(p.stem): secrets.token_hex(32) for p in sorted((REPO / "projects").glob("*.yaml"))},
    }


def _tamper(server: SftpServer, delivery_id: str) -> str:
    """Flip one byte of an uploaded file on the server, as corruption or an attacker would."""
    folder = server.inbox / PROVIDER / delivery_id
    target = sorted(folder.glob("*.hdhenc"))[0]
    with open(target, "r+b") as handle:
        handle.seek(-40, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(-40, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return target.name


def _to_parquet(csv_path: Path) -> Path:
    target = csv_path.with_suffix(".parquet")
    with duckdb.connect() as connection:
        connection.execute(
            f"COPY (SELECT * FROM read_csv(?, delim = ';', header = true, all_varchar = true)) "
            f"TO {quote_literal(str(target))} (FORMAT parquet)",
            [str(csv_path)],
        )
    return target


def _raw_row_counts(private: Path) -> dict[str, int]:
    counts = {}
    with duckdb.connect() as connection:
        for folder in sorted({p.parent.name for p in (private / "raw").glob("*/*/*/*.parquet")}):
            glob = str(private / "raw" / "*" / "*" / folder / "*.parquet")
            counts[folder] = connection.execute("SELECT count(*) FROM read_parquet(?)", [glob]).fetchone()[0]
    return counts


def _indicator_request(year: int) -> dict:
    return {
        "name": f"treated-diabetes-{year}",
        "description": f"Pharmacologically treated diabetes, {year}, by sex and age band",
        "unit": "patients",
        "algorithm": "alg_treated_diabetes",
        "breakdown": ["year", "sex", "age_band"],
        "year_from": year,
        "year_to": year,
    }


def _held(private: Path) -> list[tuple[str, str, list[str]]]:
    held = []
    for summary in sorted((private / "held").glob("*/*/_quality.json")):
        reports = json.loads(summary.read_text())
        failures = [
            f"{dataset} {o['name']} ({o['unexpected_count']} rows)"
            for dataset, report in reports.items()
            for o in report["outcomes"]
            if o["success"] is False and o["severity"] == "error"
        ]
        held.append((summary.parent.parent.name, summary.parent.name, failures))
    return held


def _warehouse_row_counts(warehouse: Path) -> dict[str, int]:
    if not warehouse.exists():
        return {}
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        tables = connection.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('marts', 'omop', 'linkage', 'algorithms') order by all"
        ).fetchall()
        count = 'select count(*) from "{}"."{}"'
        return {f"{s}.{t}": connection.execute(count.format(s, t)).fetchone()[0] for s, t in tables}


def run_nightly(defs, instance, first: str, last: str):
    """The nightly job over the months ``first``..``last`` in one run, as the schedule launches it."""
    return defs.resolve_job_def("nightly_refresh_job").execute_in_process(
        instance=instance,
        run_config=QUIET,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
        raise_on_error=False,
    )


def build_workspace(defs, instance, project: str, first: str, last: str, requester: str):
    """One project's workspace over the months ``first``..``last`` in one run, as a lead's backfill."""
    import dagster as dg

    workspace_job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey(["workspaces", "project_workspace"])}
    )
    return workspace_job.execute_in_process(
        instance=instance,
        run_config=QUIET,
        tags={
            "dagster/asset_partition_range_start": f"{first}|{project}",
            "dagster/asset_partition_range_end": f"{last}|{project}",
            REQUESTER_TAG: requester,
        },
        raise_on_error=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hdh-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "demo")
    parser.add_argument("--persons", type=int, default=2000)
    parser.add_argument("--year", type=int, default=2025)
    parser.add_argument(
        "--keep-server",
        action="store_true",
        help="leave the SFTP server running after the summary (Ctrl-C to stop)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    work = args.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, mode=0o700)

    _say("creating the hub key ring and provider signing keys")
    keys, signing = _setup_keys(work)
    _say("generating a synthetic SNDS-like population")
    from hdh_pipelines.open_science.synthetic import generate_snds

    files = generate_snds(work / "provider-files", persons=args.persons, year=args.year)
    _say("starting a private OpenSSH sshd (SFTP) on loopback")
    server = start_sftp_server(work / "sftp")
    try:
        hub_environment = _hub_environment(work, server, keys, args.year)
        env = {**os.environ, **hub_environment}
        os.environ.update(hub_environment)
        home = work / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        (work / "hdh.env").write_text("".join(f"{k}={v}\n" for k, v in hub_environment.items()))

        # The hospital sends Parquet, to show both media types of the format.
        cohort = {"COHORT_EXT": _to_parquet(files["COHORT_EXT"])}
        snds = {name: path for name, path in files.items() if name != "COHORT_EXT"}
        yy = f"{args.year % 100:02d}"
        deliveries = [
            (PROVIDER, f"snds-{args.year}-001", snds, signing[PROVIDER]),
            (COHORT_PROVIDER, f"cohort-{args.year}-001", cohort, signing[COHORT_PROVIDER]),
            (PROVIDER, f"snds-{args.year}-002", {f"T_MCO{yy}B": files[f"T_MCO{yy}B"]}, signing[PROVIDER]),
            (PROVIDER, f"snds-{args.year}-003", {"IR_BEN_R": files["IR_BEN_R"]}, signing["unregistered"]),
            (
                PROVIDER,
                f"snds-{args.year}-004",
                {"IR_BEN_R": _with_duplicate_key(files["IR_BEN_R"], work / "IR_BEN_R-duplicated.csv")},
                signing[PROVIDER],
            ),
        ]
        for provider, delivery_id, delivered, key in deliveries:
            _say(f"hdh-deliver {provider}/{delivery_id}: {', '.join(delivered)}")
            _deliver(env, provider, delivery_id, delivered, keys, key)
        tampered = _tamper(server, f"snds-{args.year}-002")
        _say(f"tampered with {PROVIDER}/snds-{args.year}-002/{tampered} on the server (one byte flipped)")
        _say(f"{PROVIDER}/snds-{args.year}-003 was signed with a key the hub's registry does not hold")
        _say(f"{PROVIDER}/snds-{args.year}-004 repeats a beneficiary: its quality suite must hold it back")

        import dagster as dg

        from hdh_devtools.demo.daemonless import tick
        from hdh_pipelines.definitions import defs
        from hdh_pipelines.ingestion.partitions import SUMMARY_TAG

        with dg.DagsterInstance.get() as instance:
            _say("sensor tick: looking for complete deliveries in the SFTP inbox")
            outcome = tick(defs, instance, "sftp_inbox_sensor", run_config=QUIET)
            for result in outcome.launched:
                partition = result.dagster_run.tags["dagster/partition"]
                # The step tags its run with what happened: published, held or quarantined, and why.
                summary = instance.get_run_by_id(result.run_id).tags.get(SUMMARY_TAG, "failed")
                _say(f"  run {result.run_id[:8]} for {partition}: {summary}")
            dg.materialize(
                [defs.get_assets_def(dg.AssetKey(["ingestion", "delivery_quarantine"]))],
                instance=instance,
                resources=defs.resources,
                run_config=QUIET,
            )
            again = tick(defs, instance, "sftp_inbox_sensor", cursor=outcome.cursor, run_config=QUIET)
            _say(f"second tick requested {len(again.launched)} run(s): deliveries are never ingested twice")
            first, last = f"{args.year - 1}-12-01", f"{args.year}-12-01"
            _say(f"nightly job over {first[:7]}..{last[:7]}: dbt normalisation, catalogue… (one run)")
            nightly = run_nightly(defs, instance, first, last)
            _say(f"  run {nightly.run_id[:8]}: {'succeeded' if nightly.success else 'FAILED (see the UI)'}")
            tick(defs, instance, "project_registry_sensor")  # adds one partition per valid project
            for project in instance.get_dynamic_partitions("projects"):
                _say(f"workspace of project {project}, {first[:7]}..{last[:7]} (one run)")
                built = build_workspace(defs, instance, project, first, last, "demo")
                _say(f"  run {built.run_id[:8]}: {'succeeded' if built.success else 'refused (see the UI)'}")
            submitted = _submit_rights_requests(work, keys, files["IR_BEN_R"])
            _say(f"rights requests from the hub's form: {', '.join(submitted)} (one of each type)")
            for result in tick(defs, instance, "rights_request_sensor", run_config=QUIET).launched:
                _say(f"  run {result.run_id[:8]}: {'succeeded' if result.success else 'FAILED (see the UI)'}")
            _say(f"on-demand indicator: treated diabetes in {args.year} by sex and age band")
            indicator = defs.resolve_job_def("indicator_job").execute_in_process(
                instance=instance,
                run_config={**QUIET, "ops": {"compute_indicator": {"config": _indicator_request(args.year)}}},
                tags={REQUESTER_TAG: "demo"},
                raise_on_error=False,
            )
            indicator_table = next(
                (
                    e.event_specific_data.metadata["table"].value
                    for e in indicator.all_events
                    if e.event_type_value == "STEP_OUTPUT"
                ),
                "(the indicator was refused: see the UI)",
            )

        private = work / "private"
        quarantined = [json.loads(p.read_text()) for p in sorted((private / "quarantine").glob("*/*.json"))]
        print()
        print("=" * 78)
        print("hdh-pipelines demo summary")
        print("=" * 78)
        print(f"SFTP server      OpenSSH sshd (pid {server.pid}) on {server.host}:{server.port}")
        print(
            f"deliveries       {len(outcome.launched)} found by the sensor, "
            f"{sum(r.success for r in outcome.launched)} ingested, {len(quarantined)} quarantined, "
            f"{len(_held(private))} held"
        )
        print("raw tables (rows):")
        for dataset, count in _raw_row_counts(private).items():
            print(f"  {dataset:<12} {count:>8}")
        print("quarantined deliveries:")
        for record in quarantined:
            print(f"  {record['provider']}/{record['delivery_id']}: {record['reason']}: {record['message']}")
        print("held by the quality gate (blocking expectations failed):")
        for provider, delivery_id, failures in _held(private):
            print(f"  {provider}/{delivery_id}: {', '.join(failures)}")
        print("warehouse (rows):")
        for table, count in _warehouse_row_counts(private / "warehouse.duckdb").items():
            print(f"  {table:<34} {count:>8}")
        print(
            "indicator: treated diabetes by sex and age band "
            f"(cells under {DISCLOSURE_THRESHOLD} suppressed, and complements):"
        )
        print(indicator_table)
        from hdh_pipelines.rights.store import RightsStore

        rights = RightsStore.under(private)
        print("rights requests (register, owner-only):")
        for kind, request_id in submitted.items():
            entry = rights.entry(request_id) or {"status": "not processed", "outcome": None, "due_on": "-"}
            print(
                f"  {kind:<11} {entry['status']:<6} {entry['outcome'] or 'awaiting the staff'} "
                f"(due {entry['due_on']})"
            )
        print(f"  access letter  {rights.letter_file(submitted['access'])}")
        print(
            f"directory of projects  {work / 'public' / 'catalogue' / 'projects.html'} (open data: "
            f"{work / 'public' / 'open-data' / 'project_directory'})"
        )
        print(f"regulatory documents   {private / 'workspaces' / 'diabetes-drug-use' / 'regulatory'}/*.html")
        print("outputs:")
        print(f"  raw tables     {private / 'raw'}/<provider>/<delivery>/<DATASET>/*.parquet")
        print(f"  quarantine     {private / 'quarantine'}")
        print(f"  warehouse      {private / 'warehouse.duckdb'}")
        print(f"  catalogue      {work / 'public' / 'catalogue' / 'index.html'}")
        print(f"  workspaces     {private / 'workspaces'}/<project>/ (audit trail: {private / 'audit'})")
        print(f"  open data      {work / 'public' / 'open-data'}")
        print(f"  indicators     {work / 'public' / 'indicators'}")
        print(f"  Dagster home   {work / 'dagster_home'}")
        print("open the UI:")
        print(f"  set -a; . {work / 'hdh.env'}; set +a; .venv/bin/dagster dev -w workspace.yaml")
        print(f"finished in {time.monotonic() - started:.0f} s")
        if args.keep_server:
            _say("SFTP server left running; Ctrl-C to stop it")
            with contextlib.suppress(KeyboardInterrupt):
                server.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
