"""Shared fixtures: a real OpenSSH SFTP server, real keys, real Dagster instances."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from hdh_deliver.keys import (
    GeneratedKey,
    HubKeyRing,
    ProviderRegistry,
    generate_hub_key,
    generate_provider_key,
    load_private_key,
    load_public_key,
)
from hdh_deliver.transfer import SftpSettings
from hdh_devtools.sftp_server import SftpServer, start_sftp_server
from hdh_pipelines.ingestion.pipeline import HubContext, QualityGate
from hdh_pipelines.ingestion.storage import HubStorage
from hdh_pipelines.linkage.resources import spark_config
from hdh_pipelines.registry import default_registry

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
# dbt commands leave out the ~350 generated staging views (dbt_project.yml, model-paths): parsing them
# costs each command about 30 s of CPU; tests/test_snds_generated_staging.py builds them.
os.environ.setdefault("HDH_DBT_GENERATED_STAGING", "off")

# The files whose tests start Spark in the test process: one work unit, so that one JVM warms up (about
# 25 s of JIT on its first linkage run) and serves the three files' sessions, instead of one JVM per file.
IN_PROCESS_SPARK = ("test_linkage_asset.py", "test_linkage.py", "test_optout_propagation.py")
IN_PROCESS_SPARK_UNIT = "tests: in-process Spark"

# The work units longest first (per-file sums of --durations=0, 2026-12-06), so that the last units to
# start are the short ones and neither of scripts/test.sh's two workers idles long while the other ends a
# long file; the files not named here (under 10 s each) come last. xdist would otherwise order the units
# by their number of tests: scripts/test.sh turns that off.
LONGEST_FIRST = (
    *IN_PROCESS_SPARK,  # one unit, the longest
    "test_demo.py",
    "test_postgres_instance.py",
    "test_normalisation_assets.py",
    "test_catalogue.py",
    "test_dbt_engines.py",
    "test_dbt_models.py",
    "test_ui.py",
    "test_snds_generated_staging.py",
    "test_ui_lineage.py",
    "test_rights.py",
    "test_quality.py",
    "test_dbt_manifest.py",
    "test_algorithms.py",
    "test_dictionary.py",
    "test_dagster_ingestion.py",
    "test_quality_gate.py",
    "test_directory.py",
    "test_ingestion.py",
    "test_referentials.py",
    "test_disclosure_attacks.py",
    "test_snds_synthetic_samples.py",
    "test_workspaces_dbt.py",
    "test_security_providers.py",
    "test_security_inbox.py",
    "test_crash_safety.py",
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's ``--dist loadfile``, with the in-process Spark files as one unit of work."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SparkFilesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return IN_PROCESS_SPARK_UNIT if Path(path).name in IN_PROCESS_SPARK else path

    return SparkFilesTogether(config, log)


def pytest_configure(config: pytest.Config) -> None:
    """Before any test, the code location's dbt manifest exists, parsed as deployed: with the generated
    staging, whatever the tests' own dbt commands leave out (scripts/setup.sh parses it the same way; this
    serves a bare `pytest` on a fresh checkout). Under pytest-xdist the controller then loads the code
    location before the workers start, rather than both workers parsing it at once."""
    if hasattr(config, "workerinput"):
        return
    from hdh_pipelines.normalisation.manifest import dbt_project, prepared_manifest_path

    if not dbt_project.manifest_path.exists():
        # The parse runs with this process's environment: set to the deployed one.
        tests_setting = os.environ["HDH_DBT_GENERATED_STAGING"]
        os.environ["HDH_DBT_GENERATED_STAGING"] = "on"
        try:
            prepared_manifest_path()
        finally:
            os.environ["HDH_DBT_GENERATED_STAGING"] = tests_setting
    if getattr(config.option, "numprocesses", None):
        import hdh_pipelines.definitions  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file, and of the other files, is kept


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    """A private sshd on a free loopback port, stopped by PID at the end of the session."""
    server = start_sftp_server(tmp_path_factory.mktemp("sftp"))
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Keys:
    folder: Path
    hub: GeneratedKey
    cnam: GeneratedKey
    cohort: GeneratedKey
    stranger: GeneratedKey  # a valid Ed25519 key no provider registered
    keyring_file: Path
    providers_file: Path

    def hub_public(self):
        return load_public_key(self.hub.public_key_file.read_bytes())

    def signing(self, which: str = "cnam"):
        return load_private_key(getattr(self, which).private_key_file)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    hub = generate_hub_key(folder / "hub", bits=3072)
    cnam = generate_provider_key(folder / "cnam")
    cohort = generate_provider_key(folder / "cohort")
    stranger = generate_provider_key(folder / "stranger")
    keyring_file = folder / "hub-keyring.yaml"
    keyring_file.write_text(yaml.safe_dump({"keys": [{"file": str(hub.private_key_file)}]}))
    providers_file = folder / "providers.yaml"
    providers_file.write_text(
        yaml.safe_dump(
            {
                "providers": {
                    "cnam": {
                        "name": "Assurance Maladie",
                        "signing_keys": [{"file": str(cnam.public_key_file)}],
                    },
                    "chu-cohort": {
                        "name": "Hospital cohort",
                        "signing_keys": [{"file": str(cohort.public_key_file)}],
                    },
                }
            }
        )
    )
    return Keys(folder, hub, cnam, cohort, stranger, keyring_file, providers_file)


@pytest.fixture
def hub(tmp_path: Path, keys: Keys) -> HubContext:
    return HubContext(
        keyring=HubKeyRing.from_file(keys.keyring_file),
        providers=ProviderRegistry.from_file(keys.providers_file),
        registry=default_registry(),
        storage=HubStorage(tmp_path / "private"),
    )


@pytest.fixture
def gated(hub: HubContext) -> HubContext:
    """The hub with its quality gate: Great Expectations suites hold a delivery that fails a blocking one."""
    return replace(hub, quality_gate=QualityGate())


@pytest.fixture
def sftp_settings(sftp_server: SftpServer) -> SftpSettings:
    return SftpSettings(
        host=sftp_server.host,
        port=sftp_server.port,
        user=sftp_server.user,
        private_key_file=sftp_server.client_key,
        known_hosts_file=sftp_server.known_hosts,
        timeout_seconds=10,
    )


@pytest.fixture
def inbox(sftp_server: SftpServer, tmp_path: Path) -> str:
    """A fresh inbox folder on the server for each test, so tests never see each other's deliveries."""
    folder = sftp_server.inbox / tmp_path.name
    folder.mkdir()
    return str(folder)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Any]:
    """A real Dagster instance (SQLite storage) of the test's own, in a fresh DAGSTER_HOME."""
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


@pytest.fixture
def hub_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keys: Keys, sftp_server: SftpServer, inbox: str
) -> dict[str, str]:
    """The environment the Definitions' EnvVar resources read, as an operator would set it. Files that run
    further stages (dbt, workspaces, the PostgreSQL instance) define their own, on top of these settings."""
    settings = {
        "HDH_SFTP_HOST": sftp_server.host,
        "HDH_SFTP_PORT": str(sftp_server.port),
        "HDH_SFTP_USER": sftp_server.user,
        "HDH_SFTP_KEY_FILE": str(sftp_server.client_key),
        "HDH_SFTP_KNOWN_HOSTS": str(sftp_server.known_hosts),
        "HDH_SFTP_INBOX": inbox,
        "HDH_PRIVATE_ROOT": str(tmp_path / "private"),
        "HDH_HUB_KEYRING": str(keys.keyring_file),
        "HDH_PROVIDER_REGISTRY": str(keys.providers_file),
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return settings


@pytest.fixture(scope="session")
def linkage_spark_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The linkage tests' local Spark session: the asset's resource configuration (``spark_config``) on two
    cores, with the settings for small inputs (a few thousand rows per run) and no web UI."""
    return spark_config(
        master="local[2]",
        driver_memory="2g",
        shuffle_partitions=2,
        local_dir=str(tmp_path_factory.mktemp("spark-local")),
        small_inputs=True,
        extra={"spark.ui.enabled": "false"},
    )
