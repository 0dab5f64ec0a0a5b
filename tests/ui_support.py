"""A real Dagster webserver + daemon (`dagster dev`) and a real headless Chromium, for the UI tests.

`dagster dev` runs in its own session, so the whole process group (webserver,
daemon, code server, run workers) is stopped by its id at the end: started from
a script, `dagster dev` would otherwise outlive a plain SIGTERM. Chromium is
driven through the Chrome DevTools Protocol over its websocket.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from websockets.sync.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[1]
DAGSTER = REPO / ".venv" / "bin" / "dagster"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    """A loopback port nothing listens on (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop_group(process: subprocess.Popen, grace_seconds: float = 20) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_seconds)
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

    def wait_until_loaded(self, timeout_seconds: float = 180) -> None:
        """Wait for the webserver to answer and the code location to load (or fail with its error)."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"dagster dev exited ({self.process.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                entries = self.graphql(_WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
                if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                    errors = [
                        entry["locationOrLoadError"]["message"]
                        for entry in entries
                        if entry["locationOrLoadError"]["__typename"] == "PythonError"
                    ]
                    assert not errors, f"code location failed to load: {errors}"
                    return
            time.sleep(1)
        raise AssertionError(f"dagster dev not ready in {timeout_seconds} s:\n{self.log_tail()}")


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
            env=dict(environment),
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
    """One Chromium page driven over the DevTools protocol (commands in order, events skipped)."""

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection
        self._ids = itertools.count(1)

    def before_each_page(self, script: str) -> None:
        """Run ``script`` in every page this tab opens from now on, before the page's own scripts."""
        self.call("Page.addScriptToEvaluateOnNewDocument", source=script)

    def call(self, method: str, **params: Any) -> dict:
        command_id = next(self._ids)
        self._connection.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._connection.recv(timeout=60))
            if message.get("id") == command_id:
                if "error" in message:
                    raise AssertionError(f"DevTools {method} failed: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, expected: set[str], timeout_seconds: float) -> set[str]:
        """The strings the JS ``expression`` lists once they include ``expected`` (or at the deadline)."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            found = set(self.evaluate(expression) or [])
            if expected <= found or time.monotonic() > deadline:
                return found
            time.sleep(1)

    def screenshot(self, target: Path) -> None:
        encoded = self.call("Page.captureScreenshot", format="png")["data"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(encoded))


def _devtools_port(profile: Path, process: subprocess.Popen, timeout_seconds: float = 30) -> int:
    """The port Chromium chose (--remote-debugging-port=0), from the DevToolsActivePort file it writes."""
    active_port = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"chromium exited ({process.returncode})")
        if active_port.exists() and active_port.read_text().strip():
            return int(active_port.read_text().splitlines()[0])
        time.sleep(0.2)
    raise AssertionError("chromium did not open its DevTools port")


@contextlib.contextmanager
def chromium_page(chromium: str, width: int = 1600, height: int = 1000) -> Iterator[DevToolsPage]:
    """A headless Chromium with a fresh profile and one blank page; the browser is stopped after."""
    with tempfile.TemporaryDirectory() as profile:
        process = subprocess.Popen(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port = _devtools_port(Path(profile), process)
            targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            page = next(target for target in targets if target["type"] == "page")
            with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as connection:
                driven = DevToolsPage(connection)
                driven.call("Page.enable")
                driven.call(
                    "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                    mobile=False,
                )
                yield driven
        finally:
            _stop_group(process, grace_seconds=10)
