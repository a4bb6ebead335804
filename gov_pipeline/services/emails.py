"""The email outbox: an email queued with each notification (when the process sends email),
the emails due, an email after an attempt, listing and resending.

A row is written in the same transaction as its notification (services/notifications.py
calls `queue_emails`), at most one per notification (unique `notification_id`);
runners/emails.py sends it after that commits. Only recipients with an email address, who
are active users, get one. What a message says is in domain/emails.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gov_pipeline.db.engine import queues_emails
from gov_pipeline.db.models import EmailDelivery, Notification, User, Workflow, WorkflowExecution
from gov_pipeline.domain.emails import (
    NOTIFICATION_LANE_MAX_ATTEMPTS,
    NOTIFICATION_LANE_RETRY_DELAY_S,
    Origin,
    address_problem,
    email_body,
    one_line,
)
from gov_pipeline.domain.errors import ConflictError, InvalidInputError, NotFoundError
from gov_pipeline.domain.statuses import EmailStatus
from gov_pipeline.services.tenants import require_tenant

log = logging.getLogger(__name__)


def _addresses(session: Session, tenant_id: str, users: Iterable[str]) -> dict[str, str]:
    """The email address of each of `users` that is active and has one."""
    rows = session.execute(
        select(User.user_id, User.email).where(
            User.tenant_id == tenant_id,
            User.user_id.in_(sorted(set(users))),
            User.active.is_(True),
            User.email.is_not(None),
        )
    )
    return {str(uid): str(email).strip() for uid, email in rows if email and email.strip()}


def _origin(session: Session, notification: Notification) -> Origin:
    workflow: tuple[str, int] | None = None
    if notification.execution_id is not None:
        row = session.execute(
            select(Workflow.name, WorkflowExecution.workflow_version)
            .join(Workflow, Workflow.id == WorkflowExecution.workflow_id)
            .where(WorkflowExecution.id == notification.execution_id)
        ).first()
        workflow = (str(row[0]), int(row[1])) if row is not None else None
    return Origin(
        tenant_id=notification.tenant_id,
        entity_type=notification.entity_type,
        entity_id=notification.entity_id,
        workflow=workflow[0] if workflow else None,
        workflow_version=workflow[1] if workflow else None,
        execution_id=notification.execution_id,
    )


def queue_emails(session: Session, notifications: Sequence[Notification]) -> list[int]:
    """Queue the email of each of `notifications` (flushed rows) whose recipient has an
    address, when the session's process sends email; returns the new deliveries' ids.

    An address that cannot be used is queued as failed at once, with the reason, so it is
    seen (and resent once the user's address is fixed) instead of tried ten times.
    """
    if not notifications or not queues_emails(session):
        return []
    rows: list[EmailDelivery] = []
    origins: dict[int | None, Origin] = {}
    for tenant_id in sorted({n.tenant_id for n in notifications}):
        mine = [n for n in notifications if n.tenant_id == tenant_id]
        addresses = _addresses(session, tenant_id, (n.user_id for n in mine))
        for n in mine:
            address = addresses.get(n.user_id)
            if address is None:
                continue
            if n.execution_id not in origins:
                origins[n.execution_id] = _origin(session, n)
            problem = address_problem(address)
            rows.append(
                EmailDelivery(
                    tenant_id=tenant_id, notification_id=n.id, execution_id=n.execution_id,
                    user_id=n.user_id, to_address=address[:320],
                    subject=one_line(n.title) or "gov-pipeline notification",
                    body=email_body(n.message, origins[n.execution_id]),
                    status=EmailStatus.FAILED if problem else EmailStatus.PENDING,
                    attempts=0, max_attempts=NOTIFICATION_LANE_MAX_ATTEMPTS, last_error=problem,
                )
            )  # fmt: skip
    session.add_all(rows)
    session.flush()
    for row in rows:
        log.info(
            "email %s queued for notification %s to user %s: %s",
            row.id, row.notification_id, row.user_id, row.status,
        )  # fmt: skip
    return [row.id for row in rows]


def due_emails(
    session: Session, limit: int = 100, ids: Sequence[int] | None = None
) -> list[EmailDelivery]:
    """Pending emails whose next attempt is due (only `ids`, when given), oldest first."""
    now = datetime.now(UTC)
    query = select(EmailDelivery).where(
        EmailDelivery.status == EmailStatus.PENDING,
        EmailDelivery.next_attempt_at.is_(None) | (EmailDelivery.next_attempt_at <= now),
    )
    if ids is not None:
        query = query.where(EmailDelivery.id.in_(list(ids)))
    return list(session.scalars(query.order_by(EmailDelivery.id).limit(limit)))


def next_due(session: Session, ids: Sequence[int] | None = None) -> tuple[int, datetime | None]:
    """How many emails are pending (of `ids`, when given), and the earliest next attempt
    among them (None: one is due now, or none is pending)."""
    query = select(
        func.count(), func.min(func.coalesce(EmailDelivery.next_attempt_at, func.now()))
    ).where(EmailDelivery.status == EmailStatus.PENDING)
    if ids is not None:
        query = query.where(EmailDelivery.id.in_(list(ids)))
    pending, when = session.execute(query).one()
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(pending or 0), when


def record_attempt(
    delivery: EmailDelivery, error: str | None, delay_s: float = NOTIFICATION_LANE_RETRY_DELAY_S
) -> str:
    """Update `delivery` after one attempt (`error` None: the server accepted it) and return
    its new status: sent, pending with the next attempt `delay_s` later, or failed once its
    attempts ran out. A delivery no longer pending (resent meanwhile) keeps its status."""
    now = datetime.now(UTC)
    delivery.attempts += 1
    delivery.last_error = error
    if delivery.status != EmailStatus.PENDING:
        log.info("email %s attempt %s: %s meanwhile, left so", delivery.id, delivery.attempts,
                 delivery.status)  # fmt: skip
        return delivery.status
    if error is None:
        delivery.status = EmailStatus.SENT
        delivery.sent_at = now
        delivery.next_attempt_at = None
    elif delivery.attempts >= delivery.max_attempts:
        delivery.status = EmailStatus.FAILED
        delivery.next_attempt_at = None
    else:
        delivery.next_attempt_at = now + timedelta(seconds=delay_s)
    log.info(
        "email %s to user %s attempt %s: %s%s", delivery.id, delivery.user_id,
        delivery.attempts, delivery.status, f" ({error})" if error else "",
    )  # fmt: skip
    return delivery.status


def list_emails(
    session: Session,
    tenant_id: str,
    *,
    status: str | None = None,
    user_id: str | None = None,
    limit: int = 100,
) -> list[EmailDelivery]:
    """The tenant's emails, newest first.

    Raises:
        NotFoundError: unknown tenant.
        InvalidInputError: `status` is not an email status.
    """
    require_tenant(session, tenant_id)
    query = select(EmailDelivery).where(EmailDelivery.tenant_id == tenant_id)
    if status is not None:
        if status not in set(EmailStatus):
            known = ", ".join(EmailStatus)
            raise InvalidInputError("--status", f"one of {known}, got {status[:40]!r}")
        query = query.where(EmailDelivery.status == status)
    if user_id is not None:
        query = query.where(EmailDelivery.user_id == user_id)
    return list(session.scalars(query.order_by(EmailDelivery.id.desc()).limit(limit)))


@dataclass(frozen=True)
class Outbox:
    """All emails by status; those that failed for good since a moment, counted and the
    latest of them listed (newest first)."""

    by_status: dict[str, int]
    failed_since: int
    failed: list[EmailDelivery]


def outbox(session: Session, since: datetime, listed: int = 100) -> Outbox:
    """The email outbox across tenants: counts by status, and the emails that failed for
    good at or after `since` (a failure older than that, never resent, no longer counts:
    there is no other way to let go of an email whose user is gone)."""
    counts = select(EmailDelivery.status, func.count()).group_by(EmailDelivery.status)
    by_status = {str(s): int(n) for s, n in session.execute(counts)}
    failed = (EmailDelivery.status == EmailStatus.FAILED) & (EmailDelivery.updated_at >= since)
    total = session.scalar(select(func.count()).select_from(EmailDelivery).where(failed))
    rows = session.scalars(
        select(EmailDelivery).where(failed).order_by(EmailDelivery.id.desc()).limit(listed)
    )
    return Outbox({s: by_status.get(s, 0) for s in EmailStatus}, int(total or 0), list(rows))


def resend_emails(
    session: Session, tenant_id: str, ids: Sequence[int] = (), *, all_failed: bool = False
) -> list[int]:
    """Put emails back in the outbox with fresh attempts, to the user's address now (so a
    fixed address is used): the given `ids` (failed or pending), or every failed one.

    Returns:
        The ids queued again, in order.

    Raises:
        InvalidInputError: neither ids nor `all_failed`; the user has no usable address.
        NotFoundError: an id is not an email of this tenant.
        ConflictError: an email was sent already (it is not sent twice).
    """
    if not ids and not all_failed:
        raise InvalidInputError("emails", "name the emails to resend, or --all-failed")
    query = select(EmailDelivery).where(EmailDelivery.tenant_id == tenant_id)
    if ids:
        query = query.where(EmailDelivery.id.in_(list(ids)))
    else:
        query = query.where(EmailDelivery.status == EmailStatus.FAILED)
    rows = list(session.scalars(query.order_by(EmailDelivery.id).with_for_update()))
    missing = sorted(set(ids) - {r.id for r in rows})
    if missing:
        raise NotFoundError("email", missing[0], tenant_id)
    addresses = _addresses(session, tenant_id, (r.user_id for r in rows))
    for row in rows:
        if row.status == EmailStatus.SENT:
            raise ConflictError(f"email {row.id} was sent at {row.sent_at}; it is not sent again")
        address = addresses.get(row.user_id, "")
        problem = address_problem(address) if address else None
        if not address or problem:
            why = f"address is {problem}" if problem else "has no email address"
            raise InvalidInputError("email", f"{row.id}: user {row.user_id} {why}; set it first")
        row.to_address = address[:320]
        row.status, row.attempts, row.next_attempt_at, row.last_error = (
            EmailStatus.PENDING, 0, None, None,
        )  # fmt: skip
        log.info("email %s to user %s queued again", row.id, row.user_id)
    session.flush()
    return [row.id for row in rows]
