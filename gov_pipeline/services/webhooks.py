"""Webhook delivery from the outbox: allow-listed hosts, HMAC-SHA256 signatures, retries.

A delivery row is written in the same transaction as the execution that asked for it; this
module sends it afterwards. The receiver gets `X-Gov-Delivery-Id` (stable across retries,
so it can drop duplicates), `X-Gov-Timestamp` and `X-Gov-Signature: sha256=<hex>` over
`<timestamp>.<body>`. Only a delivery whose action said `unsigned: true` goes out without a
signature; any other is refused while this process has no key for it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from gov_pipeline.config import Settings, host_port, normalize_host, parse_allowed_host
from gov_pipeline.db.models import WebhookDelivery
from gov_pipeline.domain.errors import InvalidInputError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Gov-Signature"
TIMESTAMP_HEADER = "X-Gov-Timestamp"
DELIVERY_HEADER = "X-Gov-Delivery-Id"
# The original notification queue: 10 attempts, a fixed 1 s apart.
RETRY_DELAY_SECONDS = 1.0
GLOBAL_SECRET_ENV = "GOV_PIPELINE_WEBHOOK_SECRET"
DEFAULT_PORTS = {"http": 80, "https": 443}


class DeliveryStatus:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def check_url_allowed(url: str, allowed_hosts: tuple[str, ...]) -> str:
    """Return the host of `url` if webhooks may call it.

    An entry `host` allows any port, `host:port` that port only; the URL's port is the one it
    gives, else 80 for http and 443 for https.

    Raises:
        InvalidInputError: not http(s), or its host and port are not in the allow-list.
    """
    parts = urlsplit(url)
    try:
        host, port = normalize_host(parts.hostname or ""), parts.port
    except ValueError:  # a port that is not a number, or out of range
        host, port = "", None
    if parts.scheme not in DEFAULT_PORTS or not host:
        raise InvalidInputError("url", f"not an http(s) URL: {url[:100]!r}")
    effective = DEFAULT_PORTS[parts.scheme] if port is None else port
    for entry in allowed_hosts:
        try:
            allowed, allowed_port = parse_allowed_host(entry)
        except ValueError:
            continue  # load_settings refuses malformed entries: one that got here matches nothing
        if allowed == host and allowed_port in (None, effective):
            return host
    listed = ", ".join(allowed_hosts) or "none"
    raise InvalidInputError(
        "url",
        f"host {host_port(host, effective)!r} is not allow-listed (allowed: {listed}; "
        "add it to GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS)",
    )


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, headers: Mapping[str, str], body: bytes, max_age_s: float = 300) -> bool:
    """What a receiver does: check the signature and that the timestamp is recent.

    Header names are matched case-insensitively (HTTP servers differ in how they pass them).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get(TIMESTAMP_HEADER.lower(), "")
    signature = lower.get(SIGNATURE_HEADER.lower(), "")
    try:
        age = abs(time.time() - float(timestamp))
    except ValueError:
        return False
    expected = sign(secret, timestamp, body).encode()
    # Bytes: compare_digest refuses non-ASCII str, and a header may carry anything.
    return age <= max_age_s and hmac.compare_digest(
        signature.encode("utf-8", "surrogateescape"), expected
    )


def _secret_for(delivery: WebhookDelivery, settings: Settings) -> str | None:
    if delivery.secret_env:
        return os.environ.get(delivery.secret_env) or settings.webhook_secret
    return settings.webhook_secret


def _no_secret(delivery: WebhookDelivery) -> str:
    unset = (
        f"{delivery.secret_env} and {GLOBAL_SECRET_ENV} are not set"
        if delivery.secret_env
        else f"{GLOBAL_SECRET_ENV} is not set"
    )
    return f"no signing secret: {unset} in this process; refusing to send unsigned"


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    status_code: int | None
    error: str | None


def send_once(delivery: WebhookDelivery, settings: Settings) -> AttemptResult:
    """One HTTP POST of `delivery`; never raises.

    Nothing is sent when the host is not allow-listed, or when the delivery is to be signed
    (not `unsigned`) and this process has no key for it: the attempt fails with the reason.
    """
    try:
        check_url_allowed(delivery.url, settings.webhook_allowed_hosts)
    except InvalidInputError as exc:
        return AttemptResult(False, None, str(exc))
    # `unsigned` is None on a row not flushed yet (the column default applies at insert).
    secret = None if delivery.unsigned else _secret_for(delivery, settings)
    if not delivery.unsigned and not secret:
        return AttemptResult(False, None, _no_secret(delivery))
    body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
    timestamp = f"{time.time():.3f}"
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "gov-pipeline-webhook/1",
        DELIVERY_HEADER: str(delivery.id),
        TIMESTAMP_HEADER: timestamp,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    request = urllib.request.Request(delivery.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=delivery.timeout_seconds) as response:
            code = int(response.status)
    except urllib.error.HTTPError as exc:
        return AttemptResult(False, exc.code, f"HTTP {exc.code}")
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return AttemptResult(False, None, f"{type(exc).__name__}: {reason}")
    return AttemptResult(200 <= code < 300, code, None if 200 <= code < 300 else f"HTTP {code}")


def due_deliveries(session: Session, limit: int = 100) -> list[WebhookDelivery]:
    """Pending deliveries whose next attempt is due, oldest first."""
    now = datetime.now(UTC)
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.status == DeliveryStatus.PENDING)
        .where(
            (WebhookDelivery.next_attempt_at.is_(None)) | (WebhookDelivery.next_attempt_at <= now)
        )
        .order_by(WebhookDelivery.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def record_attempt(
    delivery: WebhookDelivery, result: AttemptResult, delay_s: float = RETRY_DELAY_SECONDS
) -> str:
    """Update `delivery` after one attempt and return its new status."""
    now = datetime.now(UTC)
    delivery.attempts += 1
    delivery.last_status_code = result.status_code
    delivery.last_error = result.error
    if result.ok:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
    elif delivery.attempts >= delivery.max_attempts:
        delivery.status = DeliveryStatus.FAILED
    else:
        delivery.next_attempt_at = now + timedelta(seconds=delay_s)
    log.info(
        "webhook delivery %s attempt %s: %s (%s)",
        delivery.id, delivery.attempts, delivery.status, result.error or result.status_code,
    )  # fmt: skip
    return delivery.status


def payload_for(event: dict[str, Any]) -> dict[str, Any]:
    """The JSON body sent to a webhook: the event, plus a version for receivers."""
    return {"version": 1, **event}
