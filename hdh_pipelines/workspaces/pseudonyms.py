"""Project pseudonyms: keyed HMAC-SHA-256 with a per-project secret, computed inside DuckDB.

``pseudonym = HMAC-SHA-256(project key, domain || 0x1F || hub value)`` in hex,
with domains ``person``, ``claim``, ``stay``: the same person gets unrelated
pseudonyms in two projects, and a claim id can never equal a person id.

HMAC is written in SQL (RFC 2104: ``H((K ⊕ opad) || H((K ⊕ ipad) || m))``)
so millions of ids are pseudonymised in DuckDB's vectorised engine, not in
a Python loop. The key never appears in SQL text: its two padded forms sit in
a temporary one-row table of the in-memory connection, inserted as bound
parameters.

Keys come from configuration, never from the repository: a YAML secrets file
(owner-only, ``projects: {<id>: <hex key>}``) named in the configuration, or
the environment variable ``HDH_WORKSPACE_KEY_<ID>`` (id upper-cased, ``-`` →
``_``), which wins when both are set.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Mapping
from pathlib import Path

import duckdb
import yaml

from hdh_pipelines.workspaces.errors import WorkspaceRefused

MIN_KEY_BYTES = 32
_BLOCK = 64  # SHA-256 block size, in bytes


def key_variable(project_id: str) -> str:
    return "HDH_WORKSPACE_KEY_" + project_id.upper().replace("-", "_")


def load_project_key(
    project_id: str, secrets_file: Path | None, environ: Mapping[str, str] = os.environ
) -> bytes:
    """The project's key, from its environment variable or the secrets file; refused if absent or weak."""
    variable = key_variable(project_id)
    encoded = environ.get(variable)
    source = variable
    if encoded is None and secrets_file is not None:
        encoded = _from_secrets_file(project_id, secrets_file)
        source = f"{secrets_file.name} (project {project_id})"
    if encoded is None:
        raise WorkspaceRefused(
            "missing_project_key",
            f"No pseudonymisation key for project {project_id}: set {variable} or add the project to the "
            "workspace secrets file.",
            project_id=project_id,
        )
    try:
        key = bytes.fromhex(encoded.strip())
    except ValueError:
        raise WorkspaceRefused(
            "invalid_project_key", f"The key in {source} is not hexadecimal.", project_id=project_id
        ) from None
    if len(key) < MIN_KEY_BYTES:
        raise WorkspaceRefused(
            "invalid_project_key",
            f"The key in {source} has {len(key)} bytes; at least {MIN_KEY_BYTES} random bytes are required "
            "(python -c 'import secrets; print(secrets.token_hex(32))').",
            project_id=project_id,
        )
    return key


def _from_secrets_file(project_id: str, secrets_file: Path) -> str | None:
    try:
        mode = secrets_file.stat().st_mode
    except FileNotFoundError:
        raise WorkspaceRefused(
            "missing_secrets_file",
            f"The workspace secrets file {secrets_file} does not exist.",
            project_id=project_id,
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WorkspaceRefused(
            "exposed_secrets_file",
            f"The workspace secrets file {secrets_file} is readable by others (mode {stat.filemode(mode)}): "
            "make it owner-only (chmod 600) and rotate the keys it holds.",
            project_id=project_id,
        )
    fault = None
    try:
        document = yaml.safe_load(secrets_file.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        # The class and line only: YAML's own message quotes the text around the fault, a key.
        mark = getattr(error, "problem_mark", None)
        fault = type(error).__name__ + (f" at line {mark.line + 1}" if mark is not None else "")
    if fault is not None:  # raised outside the handler, so the YAML error is not even its context
        raise WorkspaceRefused(
            "invalid_secrets_file", f"{secrets_file} is not valid YAML ({fault}).", project_id=project_id
        )
    keys = document.get("projects") if isinstance(document, dict) else None
    if not isinstance(keys, dict):
        raise WorkspaceRefused(
            "invalid_secrets_file",
            f"{secrets_file} must be a YAML mapping 'projects: {{<project id>: <hex key>}}'.",
            project_id=project_id,
        )
    value = keys.get(project_id)
    return None if value is None else str(value)


def key_fingerprint(key: bytes) -> str:
    """A short public token that changes with the key (shown in manifests), revealing nothing of it."""
    return hmac.new(key, b"hdh-workspace-key-fingerprint", hashlib.sha256).hexdigest()[:16]


def install_project_key(connection: duckdb.DuckDBPyConnection, key: bytes) -> None:
    """Make ``project_pseudonym(domain, value)`` available on ``connection`` (temporary, for it only)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_BLOCK, b"\0")
    connection.execute("create or replace temp table project_key (ipad blob, opad blob)")
    connection.execute(
        "insert into project_key values ($ipad, $opad)",
        {"ipad": bytes(b ^ 0x36 for b in padded), "opad": bytes(b ^ 0x5C for b in padded)},
    )
    connection.execute(
        """
        create or replace temp macro project_pseudonym(domain, hub_value) as
            sha256((select opad from project_key)
                   || unhex(sha256((select ipad from project_key)
                                   || encode(domain || chr(31) || hub_value))))
        """
    )
