"""Escalation of overdue approval steps.

A step past its due time is escalated: its escalation target (`escalation.to` in the
definition) or, without one, the workflow owner, the tenant's admins and the step's
approvers get an urgent notice. With `repeat_every_hours` the escalation repeats at that
interval until the step is decided; with `reassign_after_hours`, once the step has been
overdue that long it is reassigned to the target (who may then decide it; the original
approvers no longer may). Each escalation round and the reassignment are rows of
`approval_escalations` under a unique key, so each happens once per step and interval,
however many escalators run and however often; a round missed while nothing ran is not
made up (the current one is done).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.bulk import insert_ignore
from gov_pipeline.db.models import Approval, ApprovalEscalation, Workflow, WorkflowExecution
from gov_pipeline.domain.statuses import (
    ApprovalStatus,
    NotificationPriority,
    NotificationType,
    Role,
)
from gov_pipeline.services import approvals as approval_service
from gov_pipeline.services import notifications

log = logging.getLogger(__name__)

ESCALATED, REASSIGNED = "escalated", "reassigned"


@dataclass
class EscalationReport:
    """The approval steps this run escalated or reassigned, and the notifications written."""

    escalated: list[int] = field(default_factory=list)
    reassigned: list[int] = field(default_factory=list)
    notified: int = 0


def overdue_approvals(session: Session, now: datetime) -> list[int]:
    """Ids of open steps (all tenants) past their due time that may have an escalation to
    do: never escalated, or with an escalation of their own (repeats, a reassignment)."""
    query = (
        select(Approval.id)
        .where(
            Approval.status == ApprovalStatus.PENDING,
            Approval.due_at < now,
            or_(Approval.escalated_at.is_(None), Approval.escalation.is_not(None)),
        )
        .order_by(Approval.id)
    )
    return list(session.scalars(query))


def current_round(overdue: timedelta, repeat_every_hours: float | None) -> int:
    """Which escalation round is due after a step has been `overdue` that long: 0 at the
    due time, then one more every `repeat_every_hours` (always 0 without repeats)."""
    if not repeat_every_hours:
        return 0
    return max(0, math.floor(overdue / timedelta(hours=repeat_every_hours)))


def _claim(session: Session, approval: Approval, kind: str, round_: int) -> bool:
    # A unique row per step, kind and round: a concurrent escalator's insert waits on the
    # first one's (PostgreSQL) or on the write lock (SQLite), then writes nothing.
    values = {"tenant_id": approval.tenant_id, "approval_id": approval.id, "kind": kind,
              "round": round_, "notified": 0}  # fmt: skip
    return insert_ignore(session, ApprovalEscalation, values) == 1


@dataclass(frozen=True)
class Escalated:
    """What one call did to one step."""

    notified: int
    escalated: bool  # a round's notice went out
    reassigned: bool


def escalate_one(session: Session, approval_id: int, now: datetime) -> Escalated | None:
    """Do what is due for one overdue step, in the caller's transaction: its reassignment
    (once) and the current escalation round (once).

    Returns:
        What was done, or None if nothing was due (done already by this or another
        escalator, or the step was decided meanwhile).
    """
    approval = session.get(Approval, approval_id, populate_existing=True)
    if approval is None or approval.status != ApprovalStatus.PENDING or approval.due_at is None:
        return None
    plan: dict[str, Any] = approval.escalation or {}
    overdue = now - approval.due_at
    notified, escalated, reassigned = 0, False, False
    after = plan.get("reassign_after_hours")
    if after is not None and overdue >= timedelta(hours=after) and approval.reassigned_at is None:
        reassigned = _claim(session, approval, REASSIGNED, 0)
        if reassigned:
            notified += _reassign(session, approval, plan, now)
    round_ = current_round(overdue, plan.get("repeat_every_hours"))
    escalated = _claim(session, approval, ESCALATED, round_)
    if escalated:
        notified += _notify(session, approval, plan, round_)
        approval.escalated_at = approval.escalated_at or now
    session.flush()
    return Escalated(notified, escalated, reassigned) if escalated or reassigned else None


def _target(plan: dict[str, Any]) -> tuple[list[str], list[str]]:
    to = plan.get("to") or {}
    return list(to.get("users") or []), list(to.get("roles") or [])


def _reassign(session: Session, approval: Approval, plan: dict[str, Any], now: datetime) -> int:
    """The step becomes the target's to decide; they are asked like approvers are."""
    users, roles = _target(plan)
    before = {"users": approval.approver_users, "roles": approval.approver_roles}
    approval_service.reassign(session, approval, users, roles)
    approval.reassigned_at = now
    session.flush()
    workflow = _workflow_of(session, approval)
    asked = approval_service.notify_approvers(session, [approval], workflow.name, None)
    log.info(
        "approval %s (execution %s) reassigned from %s to users %s roles %s",
        approval.id, approval.execution_id, before, users, roles,
    )  # fmt: skip
    return len(asked)


def _workflow_of(session: Session, approval: Approval) -> Workflow:
    execution = session.get(WorkflowExecution, approval.execution_id)
    assert execution is not None  # foreign key
    workflow = session.get(Workflow, execution.workflow_id)
    assert workflow is not None  # foreign key
    return workflow


def _notify(session: Session, approval: Approval, plan: dict[str, Any], round_: int) -> int:
    """The urgent notice of escalation round `round_` to the target (and the approvers),
    or without a target to the workflow owner, the admins and the approvers."""
    workflow = _workflow_of(session, approval)
    users, roles = _target(plan)
    if users or roles:
        recipients = notifications.resolve_recipients(
            session, approval.tenant_id, users=[*users, *approval.approver_users],
            roles=[*roles, *approval.approver_roles],
        )  # fmt: skip
    else:
        recipients = notifications.resolve_recipients(
            session, approval.tenant_id, users=approval.approver_users,
            roles=[*approval.approver_roles, Role.ADMIN], owner_id=workflow.owner_id,
        )  # fmt: skip
    due = approval.due_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if approval.due_at else ""
    step = f"step {approval.step_index + 1}"
    again = f" (reminder {round_})" if round_ else ""
    ids = notifications.send(
        session, tenant_id=approval.tenant_id, recipients=recipients,
        type=NotificationType.DEADLINE_PASSED, priority=NotificationPriority.URGENT,
        title=(
            f"Overdue approval: {workflow.name} {step} for {approval.entity_type} "
            f"{approval.entity_id} (due {due}){again}"
        ),
        message=(
            f"{approval.name or step.capitalize()} is past its due time. Decide with: "
            f"gov-pipeline approvals approve|reject|request-changes {approval.id}"
        ),
        entity_type=approval.entity_type, entity_id=approval.entity_id,
        execution_id=approval.execution_id, action_run_id=None,
    )  # fmt: skip
    _record_notified(session, approval.id, round_, len(ids))
    log.info(
        "approval %s (execution %s, %s %s) escalated (round %s) to %s",
        approval.id, approval.execution_id, approval.entity_type, approval.entity_id,
        round_, recipients,
    )  # fmt: skip
    return len(ids)


def _record_notified(session: Session, approval_id: int, round_: int, notified: int) -> None:
    row = session.scalars(
        select(ApprovalEscalation).where(
            ApprovalEscalation.approval_id == approval_id,
            ApprovalEscalation.kind == ESCALATED,
            ApprovalEscalation.round == round_,
        )
    ).one()
    row.notified = notified


def escalate_overdue(
    sessions: sessionmaker[Session], settings: Settings, *, now: datetime
) -> EscalationReport:
    """Do what is due for every open approval step whose due time is before `now`.

    Each step is handled in its own transaction, so a failure on one leaves the others
    done and that one to the next run; two escalators never both notify.

    Args:
        settings: the run's settings (kept for the call shape of the other schedules).
        now: the time the schedule runs for (timezone-aware; a naive value is taken as UTC).

    Returns:
        The ids of the steps escalated and reassigned by this call, and the notifications
        written.
    """
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    report = EscalationReport()
    with sessions.begin() as session:
        candidates = overdue_approvals(session, now)
    for approval_id in candidates:
        with sessions.begin() as session:
            done = escalate_one(session, approval_id, now)
        if done is None:
            continue
        if done.escalated:
            report.escalated.append(approval_id)
        if done.reassigned:
            report.reassigned.append(approval_id)
        report.notified += done.notified
    return report
