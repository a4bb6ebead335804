"""Unit tests of webhook signing, verification, the host allow-list, the signing-secret rule
and attempt bookkeeping (gov_pipeline.services.webhooks); no database, and HTTP only to a
receiver of the test's own on 127.0.0.1."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gov_pipeline.config import Settings
from gov_pipeline.db.models import WebhookDelivery
from gov_pipeline.domain.definitions import parse_definition
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.domain.statuses import DeliveryStatus
from gov_pipeline.domain.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AttemptResult,
    check_url_allowed,
    sign,
    verify,
)
from gov_pipeline.embedded.webhook_receiver import webhook_receiver
from gov_pipeline.runners.deliveries import send_once
from gov_pipeline.services.webhooks import record_attempt
from gov_pipeline.services.workflows import signing_issues

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
        ("https://hooks.example.com:8443/in?x=1", "hooks.example.com"),  # a host: any port
        ("http://127.0.0.1:8080/hook", "127.0.0.1"),
        ("HTTPS://HOOKS.Example.COM/in", "hooks.example.com"),
    ],
)
def test_check_url_allowed_accepts_an_allow_listed_host(url: str, host: str) -> None:
    assert check_url_allowed(url, ALLOWED) == host


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("https://evil.example.net/in", "evil.example.net:443"),
        ("https://hooks.example.com.evil.net/in", "hooks.example.com.evil.net:443"),
        ("http://example.com/in", "example.com:80"),
        ("http://localhost:8080/hook", "localhost:8080"),
    ],
)
def test_check_url_allowed_refuses_other_hosts(url: str, refused: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_url_allowed(url, ALLOWED)
    message = str(caught.value)
    assert f"host {refused!r} is not allow-listed" in message  # names the host:port refused
    assert "(allowed: hooks.example.com, 127.0.0.1;" in message  # and what is allowed


def test_check_url_allowed_with_no_list_says_how_to_allow() -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_url_allowed("https://hooks.example.com/in", ())
    message = str(caught.value)
    assert "'hooks.example.com:443'" in message and "(allowed: none;" in message
    assert "GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS" in message


def test_check_url_allowed_refusal_always_says_how_to_allow() -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_url_allowed("https://evil.example.net/in", ALLOWED)
    assert "GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS" in str(caught.value)


# An entry with a port allows that port only; the URL's port is the one it gives, else 80 for
# http and 443 for https.
PORTS = ("api.example.com:8443", "web.example.com:443", "plain.example.com:80", "[::1]:9000",
         "[fe80::1]", "[2001:DB8::0001]:8080", "open.example.com")  # fmt: skip


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.example.com:8443/x", True),
        ("http://api.example.com:8443/x", True),  # the port matters, not the scheme
        ("https://api.example.com/x", False),  # 443
        ("https://api.example.com:8444/x", False),
        ("https://web.example.com/x", True),
        ("https://web.example.com:443/x", True),
        ("http://web.example.com/x", False),  # 80
        ("http://plain.example.com/x", True),
        ("https://plain.example.com/x", False),  # 443
        ("http://[::1]:9000/x", True),
        ("http://[::1]/x", False),
        ("http://[::1]:9001/x", False),
        ("http://[FE80::1]:1234/x", True),  # an address without port: any port
        ("http://[2001:db8::1]:8080/x", True),  # the same address, written another way
        ("http://[2001:db8::1]:8081/x", False),
        ("http://open.example.com:1/x", True),
        ("https://open.example.com/x", True),
        ("http://[::2]:9000/x", False),
        ("http://example.com:8443/x", False),
    ],
)
def test_the_allow_list_matches_host_and_port(url: str, allowed: bool) -> None:
    if allowed:
        check_url_allowed(url, PORTS)
    else:
        with pytest.raises(InvalidInputError, match="is not allow-listed"):
            check_url_allowed(url, PORTS)


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://[::1]/x", "[::1]:80"),
        ("https://[::1]:9001/x", "[::1]:9001"),
        ("https://api.example.com/x", "api.example.com:443"),
    ],
)
def test_a_refusal_names_the_host_and_port_refused(url: str, refused: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_url_allowed(url, PORTS)
    listed = ", ".join(PORTS)
    assert f"host {refused!r} is not allow-listed (allowed: {listed};" in str(caught.value)


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


# --- signing: a webhook is signed, or says it is not -----------------------------------------

HOOK_ENV = "GOV_TEST_HOOK_SECRET"


def hook_settings(secret: str | None) -> Settings:
    return Settings(
        home=Path("."),
        database_url="sqlite://",
        webhook_allowed_hosts=("127.0.0.1",),
        webhook_secret=secret,
    )


def outgoing(url: str, secret_env: str | None = None, unsigned: bool | None = False) -> Any:
    return WebhookDelivery(
        id=7, tenant_id="acme", execution_id=1, url=url, payload={"version": 1},
        secret_env=secret_env, unsigned=unsigned, timeout_seconds=2.0, max_attempts=1,
    )  # fmt: skip


@pytest.fixture
def no_hook_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOOK_ENV, raising=False)


@pytest.mark.parametrize("global_secret", [None, "global-s3cret"])
def test_an_unsigned_delivery_carries_no_signature(
    no_hook_env: None, global_secret: str | None
) -> None:
    with webhook_receiver(None, (204,)) as (url, received):
        result = send_once(outgoing(url, unsigned=True), hook_settings(global_secret))
    assert result.ok
    (headers,) = received.headers
    assert SIGNATURE_HEADER.lower() not in headers
    assert headers[DELIVERY_HEADER.lower()] == "7" and TIMESTAMP_HEADER.lower() in headers


def test_a_delivery_is_signed_with_the_secret_env_else_the_global_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(HOOK_ENV, "env-s3cret")
    with webhook_receiver(None, (204,)) as (url, received):
        assert send_once(outgoing(url, secret_env=HOOK_ENV), hook_settings("global")).ok
        assert send_once(outgoing(url), hook_settings("global")).ok
        monkeypatch.setenv(HOOK_ENV, "")  # empty counts as unset
        assert send_once(outgoing(url, secret_env=HOOK_ENV), hook_settings("global")).ok
    keys = []
    for headers in received.headers:
        stamp, signature = headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()]
        keys += [
            k for k in ("env-s3cret", "global") if signature == sign(k, stamp, b'{"version":1}')
        ]
    assert keys == ["env-s3cret", "global", "global"]


@pytest.mark.parametrize(
    ("secret_env", "unsigned", "missing"),
    [
        (None, False, "GOV_PIPELINE_WEBHOOK_SECRET is not set"),
        (None, None, "GOV_PIPELINE_WEBHOOK_SECRET is not set"),  # a row from before the column
        (HOOK_ENV, False, f"{HOOK_ENV} and GOV_PIPELINE_WEBHOOK_SECRET are not set"),
    ],
)
def test_without_a_secret_a_signed_delivery_is_refused_and_nothing_is_sent(
    no_hook_env: None, secret_env: str | None, unsigned: bool | None, missing: str
) -> None:
    with webhook_receiver(None, (204,)) as (url, received):
        result = send_once(outgoing(url, secret_env, unsigned), hook_settings(None))
    assert received.headers == []
    assert (result.ok, result.status_code) == (False, None)
    assert result.error == (
        f"no signing secret: {missing} in this process; refusing to send unsigned"
    )


def test_an_empty_secret_env_value_does_not_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOOK_ENV, "")
    with webhook_receiver(None, (204,)) as (url, received):
        result = send_once(outgoing(url, secret_env=HOOK_ENV), hook_settings(None))
    assert received.headers == [] and "refusing to send unsigned" in (result.error or "")


SIGNING = {
    "name": "hooks",
    "tenant_id": "acme",
    "type": "notification",
    "trigger": "on_status_change",
    "actions": [
        {"type": "webhook", "url": "https://a.example/x"},
        {"type": "webhook", "url": "https://b.example/x", "secret_env": HOOK_ENV},
        {"type": "webhook", "url": "https://c.example/x", "unsigned": True},
        {
            "type": "request_approval",
            "steps": [{"approvers": {"users": ["u"]}}],
            "on_approved": [{"type": "webhook", "url": "https://d.example/x"}],
            "on_rejected": [{"type": "webhook", "url": "https://e.example/x", "unsigned": True}],
        },
    ],
}


def test_applying_needs_a_secret_for_every_webhook_that_is_not_unsigned() -> None:
    definition = parse_definition(SIGNING)
    issues = signing_issues(definition, webhook_secret=None)
    message = (
        "webhook has no signing secret: set secret_env, GOV_PIPELINE_WEBHOOK_SECRET, "
        "or unsigned: true"
    )
    assert [(i.path, i.message) for i in issues] == [
        ("actions[0]", message),
        ("actions[3].on_approved[0]", message),
    ]
    assert signing_issues(definition, webhook_secret="global") == []


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


@pytest.mark.parametrize("result", [OK, HTTP_500])
def test_record_attempt_on_a_delivery_cancelled_meanwhile_counts_it_and_keeps_it_cancelled(
    result: AttemptResult,
) -> None:
    d = delivery(max_attempts=1)
    d.status = DeliveryStatus.CANCELLED  # its execution was cancelled while it was sent
    assert record_attempt(d, result) == DeliveryStatus.CANCELLED
    assert (d.status, d.attempts, d.last_error) == (DeliveryStatus.CANCELLED, 1, result.error)
    assert d.delivered_at is None


def test_record_attempt_single_attempt_fails_at_once() -> None:
    d = delivery(max_attempts=1)
    assert record_attempt(d, REFUSED) == DeliveryStatus.FAILED
