"""Process the intake: verify each request, refuse forged and replayed ones, apply and register the others.

For each complete request in the intake (``<id>.json`` with its ``.sig``):
verify the form's signature, its freshness and that neither its id nor its
nonce was seen before; then apply it:

- *opposition*: an opt-out source row (``oppositions/<id>.parquet``), which
  dbt unions with the national registry in ``int_opt_out_exclusions``;
- *withdrawal*: a row that ends the person's own opposition (not the
  national registry's opt-outs, which only the registry withdraws);
- *access*: the letter listing the projects that received data about the
  person (``access``), for the staff to send;
- *question*: registered, for the staff to answer.

Every accepted request enters the register with its GDPR deadline; it stays
open until answered (oppositions and withdrawals are answered by being
applied). Each step is idempotent and keyed by the request id, so a run
killed midway is completed by the next one; the request files leave the
intake last.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from hdh_deliver.keys import ProviderRegistry
from hdh_deliver.manifest import utc_timestamp
from hdh_pipelines.core.private_files import write_private_file
from hdh_pipelines.rights.access import access_letter_html, projects_for_person
from hdh_pipelines.rights.deadlines import due_on
from hdh_pipelines.rights.requests import (
    REQUEST_SUFFIX,
    SIGNATURE_SUFFIX,
    Reason,
    RequestRefused,
    RightsRequest,
    check_fresh,
    verify_request,
)
from hdh_pipelines.rights.store import OPPOSITION_ACTIONS, RightsStore, move
from hdh_pipelines.workspaces import WorkspaceRefused, WorkspaceSettings


@dataclass(frozen=True)
class RightsSettings:
    store: RightsStore
    intake: Path
    forms: ProviderRegistry
    workspaces: WorkspaceSettings


@dataclass
class IntakeReport:
    """What one pass over the intake did: counts only."""

    accepted: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)
    letters: int = 0


def pending_requests(intake: Path) -> list[str]:
    """Ids of the complete requests waiting in the intake (the form writes the signature last)."""
    if not intake.is_dir():
        return []
    return sorted(
        path.name[: -len(REQUEST_SUFFIX)]
        for path in intake.iterdir()
        if path.name.endswith(REQUEST_SUFFIX)
        and not path.name.startswith(".")
        and (intake / (path.name[: -len(REQUEST_SUFFIX)] + SIGNATURE_SUFFIX)).is_file()
    )


def process_intake(
    settings: RightsSettings, now: datetime, environ: Mapping[str, str] = os.environ
) -> IntakeReport:
    store = settings.store.prepare()
    report = IntakeReport()
    with store.lock():
        for request_id in pending_requests(settings.intake):
            files = [
                settings.intake / f"{request_id}{suffix}" for suffix in (REQUEST_SUFFIX, SIGNATURE_SUFFIX)
            ]
            try:
                request = _accept(store, settings, request_id, files, now)
            except RequestRefused as refusal:
                store.refuse(files, {**refusal.as_dict(), "refused_at": utc_timestamp(now)})
                report.refused[str(refusal.reason)] += 1
                continue
            report.letters += _apply(store, settings, request, now, environ)
            for path, suffix in zip(files, (REQUEST_SUFFIX, SIGNATURE_SUFFIX), strict=True):
                move(path, store.root / "received" / f"{request_id}{suffix}")
            report.accepted[request.type] += 1
    return report


def _accept(
    store: RightsStore, settings: RightsSettings, request_id: str, files: list[Path], now: datetime
) -> RightsRequest:
    document, signature = (path.read_bytes() for path in files)
    request = verify_request(request_id, document, signature, settings.forms)
    check_fresh(request, now)
    if store.received_file(request_id).exists():
        raise RequestRefused(
            Reason.REPLAYED_REQUEST,
            "A request with this id was already received and applied: this copy is a replay and is ignored.",
        )
    if not store.claim_nonce(request.nonce, request_id):
        raise RequestRefused(
            Reason.REPLAYED_NONCE,
            "The request reuses the nonce of an earlier request: a replayed request under a new id.",
        )
    return request


def _apply(
    store: RightsStore,
    settings: RightsSettings,
    request: RightsRequest,
    now: datetime,
    environ: Mapping[str, str],
) -> int:
    """Apply ``request`` and register it; return the number of letters written (0 or 1)."""
    entry = store.entry(request.request_id) or {
        "request_id": request.request_id,
        "type": request.type,
        "received_on": request.created_at.date().isoformat(),
        "due_on": due_on(request.created_at.date(), extended=False).isoformat(),
        "extension_reason": None,
        "status": "open",
        "outcome": None,
        "closed_on": None,
        "reply_reference": request.reply_reference,
        "person": {"ben_nir_psa": request.ben_nir_psa, "ben_rng_gem": request.ben_rng_gem},
        "question": request.question,
        "letter": None,
        "document_sha256": request.document_sha256,
    }
    letters = 0
    if request.type in OPPOSITION_ACTIONS:
        store.write_opposition(
            request.request_id, request.type, request.ben_nir_psa, request.ben_rng_gem, request.created_at
        )
        entry |= {"status": "closed", "outcome": "applied", "closed_on": now.date().isoformat()}
    elif request.type == "access":
        try:
            disclosures = projects_for_person(settings.workspaces, request, environ)
        except WorkspaceRefused as refusal:
            # A project key missing here leaves the answer to the staff, within the deadline.
            entry["outcome"] = f"letter_not_prepared: {refusal.reason}"
        else:
            letter = store.letter_file(request.request_id)
            write_private_file(letter, access_letter_html(request, disclosures, now.date()).encode("utf-8"))
            entry |= {"outcome": "letter_ready", "letter": letter.name}
            letters = 1
    store.save_entry(entry)
    return letters


class RegisterRefused(ValueError):
    """A change to a request's entry that the register does not allow (``reason``, sentence)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def _open_entry(store: RightsStore, request_id: str) -> dict:
    entry = store.entry(request_id)
    if entry is None:
        raise RegisterRefused("unknown_request", f"No request {request_id} in the register.")
    if entry["status"] != "open":
        raise RegisterRefused("request_closed", f"Request {request_id} was closed on {entry['closed_on']}.")
    return entry


def extend_deadline(store: RightsStore, request_id: str, reason: str) -> dict:
    """Extend an open request's deadline by two months (GDPR art. 12(3)); the reason is recorded."""
    with store.lock():
        entry = _open_entry(store, request_id)
        if entry["extension_reason"] is not None:
            raise RegisterRefused(
                "already_extended", f"Request {request_id}'s deadline was already extended."
            )
        if not reason.strip():
            raise RegisterRefused("no_reason", "An extension needs its reason, which the person is told.")
        received = date.fromisoformat(entry["received_on"])
        entry |= {"due_on": due_on(received, extended=True).isoformat(), "extension_reason": reason.strip()}
        store.save_entry(entry)
        return entry


def close_request(store: RightsStore, request_id: str, outcome: str, today: date) -> dict:
    """Record that the staff answered an open request (letter sent, question answered)."""
    with store.lock():
        entry = _open_entry(store, request_id)
        entry |= {"status": "closed", "outcome": outcome, "closed_on": today.isoformat()}
        store.save_entry(entry)
        return entry
