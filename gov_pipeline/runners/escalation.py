"""Escalation of overdue approval steps: an urgent notice to the workflow owner, the
tenant's admins and the step's approvers, once per step."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.models import Approval, Workflow, WorkflowExecution
from gov_pipeline.domain.statuses import (
    ApprovalStatus,
    NotificationPriority,
    NotificationType,
    Role,
)
from gov_pipeline.services import notifications

log = logging.getLogger(__name__)


@dataclass
class EscalationReport:
    """The approval steps this run escalated, and how many notifications it wrote."""

    escalated: list[int] = field(default_factory=list)
    notified: int = 0


def overdue_approvals(session: Session, now: datetime) -> list[int]:
    """Ids of open steps (all tenants) past their due time and not yet escalated."""
    query = (
        select(Approval.id)
        .where(
            Approval.status == ApprovalStatus.PENDING,
            Approval.due_at < now,
            Approval.escalated_at.is_(None),
        )
        .order_by(Approval.id)
    )
    return list(session.scalars(query))


def _claim(session: Session, approval_id: int, now: datetime) -> bool:
    # The transaction's first write: a concurrent escalator waits on the row lock
    # (PostgreSQL) or the write lock (SQLite, BEGIN IMMEDIATE), then finds escalated_at
    # set and gets rowcount 0. A step decided since it was listed is left alone.
    result = session.execute(
        update(Approval)
        .where(
            Approval.id == approval_id,
            Approval.escalated_at.is_(None),
            Approval.status == ApprovalStatus.PENDING,
        )
        .values(escalated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def escalate_one(session: Session, approval_id: int, now: datetime) -> int | None:
    """Claim one overdue step and notify its escalation target, in the caller's transaction.

    Returns:
        How many notifications were written, or None if the step was not claimed (another
        escalator did it, or it was decided meanwhile).
    """
    if not _claim(session, approval_id, now):
        return None
    approval = session.get(Approval, approval_id, populate_existing=True)
    assert approval is not None  # claimed above
    execution = session.get(WorkflowExecution, approval.execution_id)
    assert execution is not None  # foreign key
    workflow = session.get(Workflow, execution.workflow_id)
    assert workflow is not None  # foreign key
    recipients = notifications.resolve_recipients(
        session,
        approval.tenant_id,
        users=approval.approver_users,
        roles=[*approval.approver_roles, Role.ADMIN],
        owner_id=workflow.owner_id,
    )
    due = approval.due_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if approval.due_at else ""
    step = f"step {approval.step_index + 1}"
    ids = notifications.send(
        session,
        tenant_id=approval.tenant_id,
        recipients=recipients,
        type=NotificationType.DEADLINE_PASSED,
        priority=NotificationPriority.URGENT,
        title=(
            f"Overdue approval: {workflow.name} {step} for {approval.entity_type} "
            f"{approval.entity_id} (due {due})"
        ),
        message=(
            f"{approval.name or step.capitalize()} is past its due time. Decide with: "
            f"gov-pipeline approvals approve|reject|request-changes {approval.id}"
        ),
        entity_type=approval.entity_type,
        entity_id=approval.entity_id,
        execution_id=approval.execution_id,
        action_run_id=None,
    )
    log.info(
        "approval %s (execution %s, %s %s) escalated to %s",
        approval.id, approval.execution_id, approval.entity_type, approval.entity_id,
        recipients,
    )  # fmt: skip
    return len(ids)


def escalate_overdue(
    sessions: sessionmaker[Session], settings: Settings, *, now: datetime
) -> EscalationReport:
    """Escalate every open approval step whose due time is before `now`, once each.

    Each step is claimed and notified in its own transaction, so a failure on one leaves
    the others done and that one to the next run; two escalators never both notify.

    Args:
        settings: the run's settings (kept for the call shape of the other schedules).
        now: the time the schedule runs for (timezone-aware; a naive value is taken as UTC).

    Returns:
        The ids of the steps escalated by this call and the notifications written.
    """
    report = EscalationReport()
    with sessions.begin() as session:
        candidates = overdue_approvals(session, now)
    for approval_id in candidates:
        with sessions.begin() as session:
            written = escalate_one(session, approval_id, now)
        if written is not None:
            report.escalated.append(approval_id)
            report.notified += written
    return report
