"""A real Dagster webserver + daemon (`dagster dev`) and a real headless Chromium, for the UI tests.

`dagster dev` runs in its own session, so the whole process group (webserver,
daemon, code server, run workers) is stopped by its id at the end: started from
a script, `dagster dev` would otherwise outlive a plain SIGTERM. Chromium (Debian's
package) is driven by Playwright, which downloads no browser of its own here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import requests
from playwright.sync_api import CDPSession, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from hdh_pipelines.workspaces.pseudonyms import key_variable

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
DAGSTER = REPO / ".venv" / "bin" / "dagster"
# Playwright adds --headless itself; the rest keep Chromium off the (closed) network and out of the sandbox
# it cannot set up as root.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


ARTIFACTS = REPO / "var" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The sample project (projects/) whose workspace the UI tests back-fill.
PROJECT = "diabetes-drug-use"
# The names on the graph's nodes (group boxes at the lineage's overview), not the sidebar's list.
GRAPH_NODE_NAMES = (
    "[...document.querySelectorAll('svg foreignObject')].map(n => n.textContent.trim().split(/\\s+/)[0])"
)
# A fresh browser profile gets Dagster's "Join the community" prompt over the graph; this marks it seen.
COMMUNITY_PROMPT_SEEN = "localStorage.setItem('communityNux', '1')"


def free_port() -> int:
    """A loopback port nothing listens on (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# `dagster dev` stops its daemon's threads after their current iteration: 12 to 14 s on a loaded two-core
# machine (measured), for an instance each test throws away. A short grace lets the processes write their
# last log lines; SIGKILL ends the rest.
STOP_GRACE_SECONDS = 3


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_GRACE_SECONDS)
    # Children (code server, run workers) may outlive the leader: the group goes in any case.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@dataclass
class DagsterDev:
    """A running `dagster dev` (webserver and daemon) on a loopback port."""

    process: subprocess.Popen
    port: int
    log_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, characters: int = 6000) -> str:
        return self.log_file.read_text(errors="replace")[-characters:]

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict:
        """The `data` of one GraphQL request; GraphQL-level errors fail with the server's message."""
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": dict(variables or {})}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_until(self, probe: Callable[[], T | None], what: str, timeout_seconds: float) -> T:
        """``probe()``'s first truthy answer, asked about once a second until the deadline.

        Fails at once, with the server's log, if `dagster dev` exits meanwhile: the pause between two
        questions is a wait on the process, which returns as soon as it ends.
        """
        deadline = time.monotonic() + timeout_seconds
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"dagster dev exited ({self.process.returncode}):\n{self.log_tail()}")
            answer = probe()
            if answer:
                return answer
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not after {timeout_seconds} s:\n{self.log_tail()}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=1)

    def wait_until_loaded(self, timeout_seconds: float = 180) -> None:
        """Wait for the webserver to answer and the code location to load (or fail with its error)."""

        def loaded() -> bool:
            try:
                entries = self.graphql(_WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
            except requests.RequestException:
                return False  # the webserver is not listening yet
            if not entries or any(entry["loadStatus"] != "LOADED" for entry in entries):
                return False
            errors = [
                entry["locationOrLoadError"]["message"]
                for entry in entries
                if entry["locationOrLoadError"]["__typename"] == "PythonError"
            ]
            assert not errors, f"code location failed to load: {errors}"
            return True

        self.wait_until(loaded, "the code location loaded", timeout_seconds)


_WORKSPACE_QUERY = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""


@contextlib.contextmanager
def dagster_dev(environment: Mapping[str, str], log_file: Path) -> Iterator[DagsterDev]:
    """Start `dagster dev -w workspace.yaml` in its own session; stop its whole process group after.

    Yields at once, so the caller can prepare data while the code location loads; call
    ``wait_until_loaded`` before using the server.
    """
    port = free_port()
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            [str(DAGSTER), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            # `dagster dev` parses the dbt project at each load, and so does each of its runs: into a
            # target folder of its own, with the tests' setting, not the repository's, which every other
            # test and process reads (parsed as deployed, with the generated staging).
            env={**environment, "DBT_TARGET_PATH": str(log_file.parent / "dbt-target")},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DagsterDev(process, port, log_file)
    try:
        yield server
    finally:
        _stop_group(process)


class DevToolsPage:
    """One Chromium page, driven by Playwright.

    The helpers the UI tests share; ``page`` is the Playwright ``Page`` itself for anything else
    (locators, clicks), and ``call`` sends a raw DevTools-protocol command on the page's own session.
    """

    def __init__(self, page: Page) -> None:
        self.page = page
        self._session: CDPSession | None = None

    def before_each_page(self, script: str) -> None:
        """Run ``script`` in every page this tab opens from now on, before the page's own scripts."""
        self.page.add_init_script(script)

    def goto(self, url: str) -> None:
        """Open ``url`` and wait for its network to go quiet (the app's first queries answered)."""
        self.page.goto(url, wait_until="networkidle")

    def call(self, method: str, **params: Any) -> dict:
        """One DevTools-protocol command (e.g. ``Page.navigate``); its result."""
        if self._session is None:
            self._session = self.page.context.new_cdp_session(self.page)
        return self._session.send(method, params)

    def evaluate(self, expression: str) -> Any:
        return self.page.evaluate(expression)

    def wait_for(self, expression: str, expected: set[str], timeout_seconds: float) -> set[str]:
        """The strings the JS ``expression`` lists once they include ``expected`` (or at the deadline).

        The browser re-checks on every animation frame, so this returns as soon as the page shows them.
        """
        check = (
            f"(expected) => {{ const found = new Set(({expression}) || []); "
            "return expected.every((name) => found.has(name)); }"
        )
        with contextlib.suppress(PlaywrightTimeoutError):
            self.page.wait_for_function(check, arg=sorted(expected), timeout=timeout_seconds * 1000)
        return set(self.evaluate(expression) or [])

    def screenshot(self, target: Path) -> None:
        """A PNG of the viewport once the page's network is quiet, with CSS animations stopped."""
        self.page.wait_for_load_state("networkidle")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=target, animations="disabled")


@contextlib.contextmanager
def chromium_page(chromium: str, width: int = 1600, height: int = 1000) -> Iterator[DevToolsPage]:
    """A headless Chromium (the OS package, no browser download) with a fresh profile and one blank page;
    Playwright stops the browser after."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
            yield DevToolsPage(page)
        finally:
            browser.close()


def hub_environment(folder: Path) -> dict[str, str]:
    """`dagster dev`'s environment for a hub under ``folder``: no telemetry, no SFTP, no schedule run."""
    private = folder / "private"
    nightly_hour = (datetime.now(UTC).hour + 12) % 24
    return {
        **os.environ,
        # scripts/env.sh: no telemetry.
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DAGSTER_HOME": str(folder / "dagster_home"),
        # Never used: a closed loopback port and files that do not exist.
        "HDH_SFTP_HOST": "127.0.0.1",
        "HDH_SFTP_PORT": str(free_port()),
        "HDH_SFTP_USER": "unused",
        "HDH_SFTP_KEY_FILE": str(folder / "no-sftp-key"),
        "HDH_SFTP_KNOWN_HOSTS": str(folder / "no-known-hosts"),
        "HDH_SFTP_INBOX": "/inbox",
        "HDH_HUB_KEYRING": str(folder / "no-keyring.yaml"),
        "HDH_PROVIDER_REGISTRY": str(folder / "no-providers.yaml"),
        # An intake that does not exist: the rights sensor's ticks skip instead of failing on config.
        "HDH_RIGHTS_INTAKE": str(folder / "no-rights-intake"),
        "HDH_RIGHTS_FORMS": str(folder / "no-rights-forms.yaml"),
        "HDH_PRIVATE_ROOT": str(private),
        "HDH_RAW_ROOT": str(private / "raw"),
        "HDH_WAREHOUSE_PATH": str(private / "warehouse.duckdb"),
        "HDH_FIRST_MONTH": "2024-12-01",
        "HDH_CATALOGUE_DIR": str(folder / "public" / "catalogue"),
        "HDH_PROJECTS_DIR": str(REPO / "projects"),
        "HDH_WORKSPACE_ROOT": str(private / "workspaces"),
        "HDH_WORKSPACE_AUDIT_ROOT": str(private / "audit"),
        key_variable(PROJECT): secrets.token_hex(32),
        # The nightly schedule's window is twelve hours away: it launches nothing during the test.
        "HDH_NIGHTLY_HOUR": str(nightly_hour),
        "HDH_TIMEZONE": "UTC",
    }
