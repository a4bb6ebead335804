"""Unit tests of webhook signing, verification, the host allow-list and attempt bookkeeping
(gov_pipeline.services.webhooks); no database, no network."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from gov_pipeline.db.models import WebhookDelivery
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.services.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AttemptResult,
    DeliveryStatus,
    check_url_allowed,
    record_attempt,
    sign,
    verify,
)

SECRET = "s3cret"
BODY = b'{"event":"policy.status_changed","id":7}'


def signed_headers(
    body: bytes = BODY, secret: str = SECRET, at: float | None = None
) -> dict[str, str]:
    timestamp = f"{time.time() if at is None else at:.3f}"
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(secret, timestamp, body)}


# --- sign / verify ----------------------------------------------------------------------------


def test_sign_is_sha256_hex_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"k", b"123.body", hashlib.sha256).hexdigest()
    assert sign("k", "123", b"body") == f"sha256={expected}"


def test_sign_depends_on_every_input() -> None:
    base = sign(SECRET, "100", BODY)
    assert sign(SECRET, "100", BODY) == base
    assert sign("other", "100", BODY) != base
    assert sign(SECRET, "101", BODY) != base
    assert sign(SECRET, "100", BODY + b" ") != base


def test_verify_round_trip() -> None:
    assert verify(SECRET, signed_headers(), BODY)


def test_verify_round_trip_empty_body() -> None:
    assert verify(SECRET, signed_headers(b""), b"")


def test_verify_fails_on_a_changed_body() -> None:
    headers = signed_headers()
    assert not verify(SECRET, headers, BODY.replace(b"7", b"8"))
    assert not verify(SECRET, headers, BODY + b"\n")


def test_verify_fails_with_a_wrong_secret() -> None:
    assert not verify("not-the-secret", signed_headers(), BODY)
    assert not verify(SECRET, signed_headers(secret="not-the-secret"), BODY)


def test_verify_fails_without_a_signature() -> None:
    headers = signed_headers()
    del headers[SIGNATURE_HEADER]
    assert not verify(SECRET, headers, BODY)


def test_verify_fails_with_an_empty_or_malformed_signature() -> None:
    headers = signed_headers()
    assert not verify(SECRET, {**headers, SIGNATURE_HEADER: ""}, BODY)
    bare_hex = headers[SIGNATURE_HEADER].removeprefix("sha256=")
    assert not verify(SECRET, {**headers, SIGNATURE_HEADER: bare_hex}, BODY)


def test_verify_fails_on_a_non_ascii_signature() -> None:
    headers = {**signed_headers(), SIGNATURE_HEADER: "sha256=\u00e9"}
    assert not verify(SECRET, headers, BODY)


def test_verify_fails_without_a_timestamp() -> None:
    headers = signed_headers()
    del headers[TIMESTAMP_HEADER]
    assert not verify(SECRET, headers, BODY)


@pytest.mark.parametrize("age_s", [301, 3600, -301])
def test_verify_fails_on_a_timestamp_too_far_from_now(age_s: float) -> None:
    # correctly signed, but sent too long ago (or claiming to be from the future)
    assert not verify(SECRET, signed_headers(at=time.time() - age_s), BODY)


def test_verify_accepts_a_timestamp_within_max_age() -> None:
    assert verify(SECRET, signed_headers(at=time.time() - 290), BODY)
    assert not verify(SECRET, signed_headers(at=time.time() - 290), BODY, max_age_s=60)


@pytest.mark.parametrize("timestamp", ["", "abc", "12:00", "1e3x", "nan", "inf", "-inf"])
def test_verify_fails_on_a_non_numeric_timestamp(timestamp: str) -> None:
    headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(SECRET, timestamp, BODY)}
    assert not verify(SECRET, headers, BODY)


@pytest.mark.parametrize("case", [str.lower, str.upper, str.title])
def test_verify_matches_header_names_case_insensitively(case: Any) -> None:
    headers = {case(name): value for name, value in signed_headers().items()}
    assert verify(SECRET, headers, BODY)


# --- the host allow-list ----------------------------------------------------------------------

ALLOWED = ("hooks.example.com", "127.0.0.1")


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://hooks.example.com/in", "hooks.example.com"),
        ("http://hooks.example.com/in", "hooks.example.com"),
        ("https://hooks.example.com:8443/in?x=1", "hooks.example.com"),
        ("http://127.0.0.1:8080/hook", "127.0.0.1"),
        ("HTTPS://HOOKS.Example.COM/in", "hooks.example.com"),
    ],
)
def test_check_url_allowed_accepts_an_allow_listed_host(url: str, host: str) -> None:
    assert check_url_allowed(url, ALLOWED) == host


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.net/in",
        "https://hooks.example.com.evil.net/in",
        "https://example.com/in",
        "http://localhost:8080/hook",
    ],
)
def test_check_url_allowed_refuses_other_hosts(url: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_url_allowed(url, ALLOWED)
    message = str(caught.value)
    host = url.split("/")[2].split(":")[0]
    assert repr(host) in message  # names the refused host
    assert "not allow-listed" in message
    assert "hooks.example.com" in message  # and what is allowed


def test_check_url_allowed_with_no_list_says_how_to_allow() -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_url_allowed("https://hooks.example.com/in", ())
    message = str(caught.value)
    assert "'hooks.example.com'" in message
    assert "GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS" in message


def test_check_url_allowed_refusal_always_says_how_to_allow() -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_url_allowed("https://evil.example.net/in", ALLOWED)
    assert "GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/in",
        "file:///etc/passwd",
        "file://hooks.example.com/etc/passwd",
        "javascript:alert(1)",
        "hooks.example.com/in",
        "//hooks.example.com/in",
    ],
)
def test_check_url_allowed_refuses_non_http_schemes(url: str) -> None:
    with pytest.raises(InvalidInputError, match="not an http\\(s\\) URL"):
        check_url_allowed(url, ALLOWED)


@pytest.mark.parametrize("url", ["http://", "https:///path", "http://:8080/x", ""])
def test_check_url_allowed_refuses_a_url_without_host(url: str) -> None:
    with pytest.raises(InvalidInputError, match="not an http\\(s\\) URL"):
        check_url_allowed(url, ALLOWED)


# --- record_attempt ---------------------------------------------------------------------------


def delivery(attempts: int = 0, max_attempts: int = 3) -> WebhookDelivery:
    return WebhookDelivery(
        id=1,
        tenant_id="acme",
        execution_id=1,
        action_run_id=1,
        url="https://hooks.example.com/in",
        payload={"version": 1},
        status=DeliveryStatus.PENDING,
        attempts=attempts,
        max_attempts=max_attempts,
    )


OK = AttemptResult(True, 204, None)
HTTP_500 = AttemptResult(False, 500, "HTTP 500")
REFUSED = AttemptResult(False, None, "URLError: connection refused")


def test_record_attempt_success_delivers() -> None:
    d = delivery()
    assert record_attempt(d, OK) == DeliveryStatus.DELIVERED
    assert d.status == DeliveryStatus.DELIVERED
    assert d.attempts == 1
    assert d.last_status_code == 204
    assert d.last_error is None
    assert d.delivered_at is not None
    assert abs((datetime.now(UTC) - d.delivered_at).total_seconds()) < 5


def test_record_attempt_success_on_the_last_attempt_delivers() -> None:
    d = delivery(attempts=2, max_attempts=3)
    assert record_attempt(d, OK) == DeliveryStatus.DELIVERED


@pytest.mark.parametrize("result", [HTTP_500, REFUSED])
def test_record_attempt_failure_stays_pending_and_schedules_a_retry(
    result: AttemptResult,
) -> None:
    d = delivery()
    before = datetime.now(UTC)
    assert record_attempt(d, result, delay_s=30) == DeliveryStatus.PENDING
    assert d.status == DeliveryStatus.PENDING
    assert d.attempts == 1
    assert d.last_status_code == result.status_code
    assert d.last_error == result.error
    assert d.delivered_at is None
    assert d.next_attempt_at is not None
    assert d.next_attempt_at > datetime.now(UTC)
    assert 25 <= (d.next_attempt_at - before).total_seconds() <= 35


def test_record_attempt_fails_when_attempts_reach_max() -> None:
    d = delivery(max_attempts=3)
    assert record_attempt(d, HTTP_500) == DeliveryStatus.PENDING
    assert record_attempt(d, REFUSED) == DeliveryStatus.PENDING
    assert record_attempt(d, HTTP_500) == DeliveryStatus.FAILED
    assert d.status == DeliveryStatus.FAILED
    assert d.attempts == 3
    assert d.last_error == "HTTP 500"
    assert d.delivered_at is None


def test_record_attempt_single_attempt_fails_at_once() -> None:
    d = delivery(max_attempts=1)
    assert record_attempt(d, REFUSED) == DeliveryStatus.FAILED
