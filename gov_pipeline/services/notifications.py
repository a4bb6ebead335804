"""In-app notifications: resolve recipients (users, roles, owner) and write rows once; each
also queues its email when the process sends email (services/emails.py)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from gov_pipeline.db.bulk import buffer_rows, buffering, draw_id
from gov_pipeline.db.models import Notification
from gov_pipeline.services.emails import queue_emails
from gov_pipeline.services.tenants import require_tenant, users_with_roles


def resolve_recipients(
    session: Session,
    tenant_id: str,
    *,
    users: Iterable[str] = (),
    roles: Iterable[str] = (),
    owner_id: str | None = None,
) -> list[str]:
    """Listed users, holders of `roles`, and `owner_id`, without duplicates, sorted."""
    found = set(users) | set(users_with_roles(session, tenant_id, roles))
    if owner_id:
        found.add(owner_id)
    return sorted(found)


def send(
    session: Session,
    *,
    tenant_id: str,
    recipients: Iterable[str],
    type: str,
    title: str,
    message: str = "",
    priority: str = "medium",
    entity_type: str | None = None,
    entity_id: str | None = None,
    execution_id: int | None = None,
    action_run_id: int | None = None,
) -> list[int]:
    """Write one notification per recipient (and queue the email of each recipient with an
    address, when the session's process sends email); returns the notifications' ids."""
    rows = [
        Notification(
            id=draw_id(session, "notifications") if buffering(session) else None,
            tenant_id=tenant_id,
            user_id=user,
            type=type,
            priority=priority,
            title=title[:500],
            message=message,
            entity_type=entity_type,
            entity_id=entity_id,
            execution_id=execution_id,
            action_run_id=action_run_id,
        )
        for user in recipients
    ]
    if not buffer_rows(session, rows):  # else written with the chunk's rows, at its end
        session.add_all(rows)
        session.flush()
    queue_emails(session, rows)
    return [r.id for r in rows]


def list_notifications(
    session: Session, tenant_id: str, user_id: str | None = None, limit: int = 100
) -> list[Notification]:
    """The tenant's notifications, newest first.

    Raises:
        NotFoundError: unknown tenant.
    """
    require_tenant(session, tenant_id)
    query = select(Notification).where(Notification.tenant_id == tenant_id)
    if user_id is not None:
        query = query.where(Notification.user_id == user_id)
    return list(session.scalars(query.order_by(Notification.id.desc()).limit(limit)))
