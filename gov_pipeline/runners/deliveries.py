"""Send the webhook outbox: lease a due delivery, POST it outside any transaction, record.

A delivery whose attempts run out fails its execution and notifies the workflow owner;
other executions carry on.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.models import WebhookDelivery, WorkflowExecution
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.domain.statuses import DeliveryStatus
from gov_pipeline.domain.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AttemptResult,
    check_url_allowed,
    no_signing_key,
    sign,
    signing_key,
)
from gov_pipeline.engine.failures import mark_failed
from gov_pipeline.services.webhooks import due_deliveries, record_attempt

log = logging.getLogger(__name__)


@dataclass
class DeliveryStats:
    attempts: int = 0
    delivered: int = 0
    failed: int = 0
    failed_executions: list[int] = field(default_factory=list)  # failed by a delivery


def _lease(sessions: sessionmaker[Session], delivery_id: int, seconds: float) -> bool:
    """Hold a due delivery for one attempt, so two deliverers never send it at once."""
    now = datetime.now(UTC)
    with sessions.begin() as session:
        result = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
                (WebhookDelivery.next_attempt_at.is_(None))
                | (WebhookDelivery.next_attempt_at <= now),
            )
            .values(next_attempt_at=now + timedelta(seconds=seconds))
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def deliver_due(
    sessions: sessionmaker[Session], settings: Settings, limit: int = 100
) -> DeliveryStats:
    """One attempt at each delivery that is due now."""
    stats = DeliveryStats()
    with sessions.begin() as session:
        due = [(d.id, d.timeout_seconds) for d in due_deliveries(session, limit)]
    for delivery_id, timeout in due:
        if not _lease(sessions, delivery_id, timeout + 5):
            continue
        with sessions.begin() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            assert delivery is not None
            session.expunge(delivery)
        result = send_once(delivery, settings)  # no transaction held while waiting on HTTP
        stats.attempts += 1
        with sessions.begin() as session:
            # The execution's row first, then the delivery's: the order cancelling an
            # execution takes them in (else the two could deadlock).
            execution = session.get(WorkflowExecution, delivery.execution_id, with_for_update=True)
            delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
            assert delivery is not None
            status = record_attempt(delivery, result, settings.webhook_retry_delay_s)
            if status == DeliveryStatus.DELIVERED:
                stats.delivered += 1
            elif status == DeliveryStatus.FAILED:
                stats.failed += 1
                if execution is not None:
                    mark_failed(
                        session,
                        execution,
                        f"webhook to {delivery.url} failed after {delivery.attempts} "
                        f"attempts: {delivery.last_error}",
                    )
                    stats.failed_executions.append(execution.id)
    return stats


def next_due_in(sessions: sessionmaker[Session]) -> float | None:
    """Seconds until the next pending delivery is due (0 if now), None if none pending."""
    with sessions.begin() as session:
        when = session.scalar(
            select(func.min(func.coalesce(WebhookDelivery.next_attempt_at, func.now()))).where(
                WebhookDelivery.status == DeliveryStatus.PENDING
            )
        )
        pending = session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.status == DeliveryStatus.PENDING)
        )
    if not pending:
        return None
    if when is None:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def deliver_pending(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    deadline_s: float = 600.0,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryStats:
    """Deliver until nothing is pending (each delivery ends delivered or failed)."""
    total = DeliveryStats()
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        wait = next_due_in(sessions)
        if wait is None:
            break
        if wait > 0:
            sleep(min(wait, 1.0))
            continue
        stats = deliver_due(sessions, settings)
        total.attempts += stats.attempts
        total.delivered += stats.delivered
        total.failed += stats.failed
        total.failed_executions += stats.failed_executions
    return total


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
    secret = (
        None
        if delivery.unsigned
        else signing_key(delivery.secret_env, settings.webhook_secret, os.environ)
    )
    if not delivery.unsigned and not secret:
        return AttemptResult(False, None, no_signing_key(delivery.secret_env))
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
