"""The webhook outbox: a delivery's payload, the deliveries due, a delivery after an attempt.

A delivery row is written in the same transaction as the execution that asked for it;
runners/deliveries.py sends it after that commits. Signing and the host allow-list are in
domain/webhooks.py.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gov_pipeline.db.models import WebhookDelivery
from gov_pipeline.domain.statuses import DeliveryStatus
from gov_pipeline.domain.webhooks import AttemptResult

log = logging.getLogger(__name__)

# The original notification queue: 10 attempts, a fixed 1 s apart.
RETRY_DELAY_SECONDS = 1.0


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
    """Update `delivery` after one attempt and return its new status.

    A delivery no longer pending (cancelled while this attempt was under way) keeps its
    status: the attempt is counted, nothing more.
    """
    now = datetime.now(UTC)
    delivery.attempts += 1
    delivery.last_status_code = result.status_code
    delivery.last_error = result.error
    if delivery.status != DeliveryStatus.PENDING:
        log.info(
            "webhook delivery %s attempt %s: %s meanwhile, left so (%s)",
            delivery.id, delivery.attempts, delivery.status, result.error or result.status_code,
        )  # fmt: skip
        return delivery.status
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
