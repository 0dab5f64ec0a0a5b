"""The request format and the deadlines, without Dagster: every refusal reason of a malformed or foreign
request, and the GDPR month counted as Regulation 1182/71 counts it (real keys, real files)."""

import json
import secrets
from datetime import UTC, date, datetime

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ed25519

from hdh_deliver.keys import ProviderRegistry, public_pem
from hdh_deliver.manifest import sign
from hdh_pipelines.rights.deadlines import add_months, age_bucket, due_on, open_request_counts
from hdh_pipelines.rights.requests import Reason, RequestRefused, check_fresh, signed_request, verify_request

NOW = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)
KEY = ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> ProviderRegistry:
    path = tmp_path_factory.mktemp("forms") / "forms.yaml"
    path.write_text(
        yaml.safe_dump(
            {"providers": {"website": {"signing_keys": [{"pem": public_pem(KEY.public_key()).decode()}]}}}
        )
    )
    return ProviderRegistry.from_file(path)


def _request(**changes) -> tuple[bytes, bytes]:
    fields = {
        "form": "website",
        "signing_key": KEY,
        "request_id": "R-1",
        "nonce": secrets.token_hex(16),
        "created_at": NOW,
        "request_type": "opposition",
        "ben_nir_psa": "A" * 17,
        "ben_rng_gem": 1,
        "reply_reference": "account-123",
    } | changes
    return signed_request(**fields)


def _resigned(document: bytes, **changes) -> tuple[bytes, bytes]:
    """The request with fields changed, signed again with the live key: well signed, malformed."""
    parsed = json.loads(document) | changes
    body = json.dumps(parsed).encode()
    return body, sign(body, KEY)


def test_a_well_formed_request_is_accepted(forms):
    request = verify_request("R-1", *_request(request_type="question", question="Pourquoi ?"), forms)
    assert (request.type, request.ben_rng_gem, request.question) == ("question", 1, "Pourquoi ?")
    check_fresh(request, NOW)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"format": "hdh-rights-request/2"}, Reason.BAD_REQUEST),
        ({"request_id": "R-2"}, Reason.BAD_REQUEST),
        ({"nonce": "short"}, Reason.BAD_REQUEST),
        ({"type": "erasure"}, Reason.BAD_REQUEST),
        ({"person": {"ben_nir_psa": "A" * 16, "ben_rng_gem": 1}}, Reason.BAD_REQUEST),
        ({"person": {"ben_nir_psa": "A" * 17, "ben_rng_gem": True}}, Reason.BAD_REQUEST),
        ({"person": {"ben_nir_psa": "A" * 17, "ben_rng_gem": 1, "name": "Jean Dupont"}}, Reason.BAD_REQUEST),
        ({"question": "not for an opposition"}, Reason.BAD_REQUEST),
        ({"created_at": "2026-12-04 21:00:00"}, Reason.BAD_REQUEST),
        ({"form": "another-site"}, Reason.UNKNOWN_FORM),
        ({"key_id": ["not", "a", "key id"]}, Reason.UNKNOWN_KEY),
        ({"key_id": "0" * 64}, Reason.UNKNOWN_KEY),
    ],
)
def test_a_malformed_or_foreign_request_is_refused_with_its_reason(forms, changes, reason):
    document, signature = _resigned(_request()[0], **changes)
    with pytest.raises(RequestRefused) as refused:
        verify_request("R-1", document, signature, forms)
    assert refused.value.reason == reason and refused.value.message
    assert "A" * 17 not in refused.value.message


def test_names_sizes_and_signatures(forms):
    document, signature = _request()
    with pytest.raises(RequestRefused, match="bad_name"):
        verify_request("../R-1", document, signature, forms)
    with pytest.raises(RequestRefused, match="too_large"):
        verify_request("R-1", document + b" " * 70_000, signature, forms)
    with pytest.raises(RequestRefused, match="bad_signature"):
        verify_request("R-1", document, b"not base64\n", forms)
    with pytest.raises(RequestRefused, match="bad_request"):
        verify_request("R-1", b"\xff\xfe", signature, forms)


@pytest.mark.parametrize(
    ("created_at", "fresh"),
    [
        (datetime(2026, 12, 1, 21, 0, tzinfo=UTC), True),
        (datetime(2026, 12, 1, 20, 59, tzinfo=UTC), False),
        (datetime(2026, 12, 4, 21, 5, tzinfo=UTC), True),
        (datetime(2026, 12, 4, 21, 6, tzinfo=UTC), False),
    ],
)
def test_a_request_is_fresh_for_three_days_and_five_minutes_ahead(forms, created_at, fresh):
    request = verify_request("R-1", *_request(created_at=created_at), forms)
    if fresh:
        check_fresh(request, NOW)
    else:
        with pytest.raises(RequestRefused, match="outside_time_window"):
            check_fresh(request, NOW)


def test_the_gdpr_month_ends_on_the_same_day_or_the_months_last_day():
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert add_months(date(2028, 1, 31), 1) == date(2028, 2, 29)
    assert add_months(date(2026, 11, 30), 3) == date(2027, 2, 28)
    assert due_on(date(2026, 12, 4), extended=False) == date(2027, 1, 4)
    assert due_on(date(2026, 12, 4), extended=True) == date(2027, 3, 4)


def test_open_requests_by_age_bucket_and_overdue():
    def entry(received: str, due: str, status: str = "open", kind: str = "question") -> dict:
        return {"received_on": received, "due_on": due, "status": status, "type": kind}

    today = date(2026, 12, 4)
    entries = [
        entry("2026-12-04", "2027-01-04"),
        entry("2026-11-27", "2026-12-27", kind="access"),
        entry("2026-11-26", "2026-12-26"),
        entry("2026-11-03", "2026-12-03"),
        entry("2026-09-04", "2026-12-04", kind="access"),  # extended: due today, not overdue yet
        entry("2026-11-01", "2026-12-01", status="closed"),
    ]
    assert [age_bucket(e, today) for e in entries[:5]] == [
        "0-7 days",
        "0-7 days",
        "8-21 days",
        "overdue",
        "22 days or more",
    ]
    counts = open_request_counts(entries, today)
    assert counts["by_age"] == {"0-7 days": 2, "8-21 days": 1, "22 days or more": 1, "overdue": 1}
    assert counts["by_type"] == {"access": 2, "question": 3}
