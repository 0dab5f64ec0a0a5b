"""``hdh-rights-request/1``: a person's request, signed by the hub's rights form, verified, parsed strictly.

A request is two files in the intake folder: ``<request_id>.json`` (UTF-8
JSON, fields below) and ``<request_id>.json.sig`` (base64 of its Ed25519
signature, one line), written by the website's form, the signature last. The
signature scheme and the key registry are the deliveries' own
(``hdh_deliver.manifest.sign``/``verify_signature``, a
provider-style registry of the forms' public keys); see docs/rights.md.

A person is named only by the national pseudonym the form computes as the
data controllers do (BEN_NIR_PSA with the twin rank BEN_RNG_GEM), never by a
name; ``reply_reference`` is the website's opaque handle to answer them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric import ed25519

from hdh_deliver.errors import DeliveryRejected
from hdh_deliver.keys import Provider, ProviderRegistry, key_id
from hdh_deliver.manifest import sign, utc_timestamp, verify_signature
from hdh_deliver.names import DELIVERY_ID_RE

FORMAT = "hdh-rights-request/1"
REQUEST_SUFFIX = ".json"
SIGNATURE_SUFFIX = ".json.sig"
REQUEST_TYPES = ("opposition", "withdrawal", "access", "question")
# A request is accepted only while its signed creation time is this recent (and not in the future
# beyond the clock skew): an old signed request replayed after its nonce was forgotten is refused.
MAX_REQUEST_AGE = timedelta(days=3)
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_REQUEST_BYTES = 64 * 1024
MAX_QUESTION_CHARS = 4000
# Request ids follow the delivery ids' rule: safe as file names on every side.
REQUEST_ID_RE = DELIVERY_ID_RE
_NONCE = re.compile(r"[0-9a-f]{32,128}")
_PSEUDONYM = re.compile(r"[0-9A-Za-z]{17}")
_REPLY_REFERENCE = re.compile(r"[A-Za-z0-9_-]{8,64}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_FIELDS = frozenset(
    {"format", "form", "key_id", "request_id", "nonce", "created_at", "type", "person", "reply_reference"}
)


class Reason(StrEnum):
    """Why a request file is refused (machine-readable)."""

    BAD_NAME = "bad_name"
    TOO_LARGE = "too_large"
    BAD_REQUEST = "bad_request"
    UNKNOWN_FORM = "unknown_form"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    OUTSIDE_TIME_WINDOW = "outside_time_window"
    REPLAYED_REQUEST = "replayed_request"
    REPLAYED_NONCE = "replayed_nonce"


class RequestRefused(Exception):
    """A request file that is not a genuine, fresh, first-seen request: refused whole, never applied.

    ``message`` is for the hub's staff; it never quotes the pseudonym or the question.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"reason": str(self.reason), "message": self.message}


@dataclass(frozen=True)
class RightsRequest:
    request_id: str
    form: str
    nonce: str
    created_at: datetime
    type: str
    ben_nir_psa: str
    ben_rng_gem: int
    reply_reference: str
    question: str | None
    document_sha256: str


def _bad(message: str) -> RequestRefused:
    return RequestRefused(Reason.BAD_REQUEST, message)


def _parse(document: dict, expected_id: str) -> dict:
    if not isinstance(document, dict):
        raise _bad("The request is not a JSON object.")
    allowed = _FIELDS | ({"question"} if document.get("type") == "question" else set())
    missing, unknown = sorted(_FIELDS - set(document)), sorted(set(document) - allowed)
    if missing or unknown:
        raise _bad(f"The request lacks {missing or 'nothing'} and has unexpected fields {unknown or 'none'}.")
    if document["format"] != FORMAT:
        raise _bad(f"The request's format is not {FORMAT}.")
    if document["request_id"] != expected_id:
        raise _bad("The request_id inside the request differs from its file name.")
    if not isinstance(document["nonce"], str) or not _NONCE.fullmatch(document["nonce"]):
        raise _bad("The nonce must be 32 to 128 lowercase hexadecimal characters (at least 128 random bits).")
    if not isinstance(document["created_at"], str) or not _TIMESTAMP.fullmatch(document["created_at"]):
        raise _bad("created_at must be a UTC time such as 2026-12-04T21:00:00Z.")
    if document["type"] not in REQUEST_TYPES:
        raise _bad(f"The request type must be one of {', '.join(REQUEST_TYPES)}.")
    person = document["person"]
    if not isinstance(person, dict) or set(person) != {"ben_nir_psa", "ben_rng_gem"}:
        raise _bad("person must hold exactly ben_nir_psa and ben_rng_gem.")
    if not isinstance(person["ben_nir_psa"], str) or not _PSEUDONYM.fullmatch(person["ben_nir_psa"]):
        raise _bad("person.ben_nir_psa must be the 17-character national pseudonym.")
    rank = person["ben_rng_gem"]
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= 9:
        raise _bad("person.ben_rng_gem must be the twin rank, an integer from 1 to 9.")
    if not isinstance(document["reply_reference"], str) or not _REPLY_REFERENCE.fullmatch(
        document["reply_reference"]
    ):
        raise _bad("reply_reference must be 8 to 64 letters, digits, '_' or '-'.")
    if document["type"] == "question":
        question = document.get("question")
        if not isinstance(question, str) or not question.strip() or len(question) > MAX_QUESTION_CHARS:
            raise _bad(f"A question request holds its question, 1 to {MAX_QUESTION_CHARS} characters.")
    return document


def verify_request(
    request_id: str, document: bytes, signature: bytes, forms: ProviderRegistry
) -> RightsRequest:
    """The request in ``document`` if its form signed it with a live key; else ``RequestRefused``."""
    if not REQUEST_ID_RE.fullmatch(request_id):
        raise RequestRefused(
            Reason.BAD_NAME, "The request file's name is not a request id (letters, digits, '.', '_', '-')."
        )
    if len(document) > MAX_REQUEST_BYTES:
        raise RequestRefused(Reason.TOO_LARGE, f"The request is larger than {MAX_REQUEST_BYTES} bytes.")
    try:
        parsed = json.loads(document.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _bad("The request is not UTF-8 JSON.") from None
    form_id = parsed.get("form") if isinstance(parsed, dict) else None
    form = forms.get(form_id) if isinstance(form_id, str) else None
    if form is None:
        raise RequestRefused(
            Reason.UNKNOWN_FORM,
            "The request names no form the hub's form registry knows: it was not sent by the hub's website.",
        )
    named_key = parsed.get("key_id")
    public_key = form.signing_keys.get(named_key) if isinstance(named_key, str) else None
    if public_key is None:
        raise RequestRefused(
            Reason.UNKNOWN_KEY,
            f"The request was signed with a key that is not a live key of form {form.provider_id}: "
            "a retired or forged key.",
        )
    try:
        verify_signature(document, signature, Provider(form.provider_id, form.name, {named_key: public_key}))
    except DeliveryRejected:
        raise RequestRefused(
            Reason.BAD_SIGNATURE,
            "The request's signature does not verify with the key it names: the request was altered after "
            "signing or forged.",
        ) from None
    fields = _parse(parsed, request_id)
    return RightsRequest(
        request_id=request_id,
        form=form.provider_id,
        nonce=fields["nonce"],
        created_at=datetime.strptime(fields["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
        type=fields["type"],
        ben_nir_psa=fields["person"]["ben_nir_psa"],
        ben_rng_gem=fields["person"]["ben_rng_gem"],
        reply_reference=fields["reply_reference"],
        question=fields.get("question"),
        document_sha256=hashlib.sha256(document).hexdigest(),
    )


def check_fresh(request: RightsRequest, now: datetime) -> None:
    """Refuse a request signed too long ago, or claiming to come from the future."""
    if request.created_at < now - MAX_REQUEST_AGE or request.created_at > now + MAX_CLOCK_SKEW:
        raise RequestRefused(
            Reason.OUTSIDE_TIME_WINDOW,
            f"The request was signed at {utc_timestamp(request.created_at)}, outside the accepted window "
            f"(at most {MAX_REQUEST_AGE.days} days old, {int(MAX_CLOCK_SKEW.total_seconds() // 60)} minutes "
            "ahead): a delayed or replayed request. The person is asked to submit it again.",
        )


def signed_request(
    *,
    form: str,
    signing_key: ed25519.Ed25519PrivateKey,
    request_id: str,
    nonce: str,
    created_at: datetime,
    request_type: str,
    ben_nir_psa: str,
    ben_rng_gem: int,
    reply_reference: str,
    question: str | None = None,
) -> tuple[bytes, bytes]:
    """The two files the form writes (request, signature): the reference implementation of the format."""
    document = {
        "format": FORMAT,
        "form": form,
        "key_id": key_id(signing_key.public_key()),
        "request_id": request_id,
        "nonce": nonce,
        "created_at": utc_timestamp(created_at),
        "type": request_type,
        "person": {"ben_nir_psa": ben_nir_psa, "ben_rng_gem": ben_rng_gem},
        "reply_reference": reply_reference,
    }
    if question is not None:
        document["question"] = question
    body = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return body, sign(body, signing_key)
