"""The governed state as an operator watches it: the policy register, the approval backlog,
workflow outcomes and the change backlog. Read-only queries over a session the caller owns,
each a few aggregate reads (the Dagster assets of orchestration/governance.py show them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gov_pipeline.db.models import Approval, EntityChange, Policy, Workflow, WorkflowExecution
from gov_pipeline.domain.statuses import ApprovalStatus, ExecutionStatus
from gov_pipeline.services.changes import unprocessed
from gov_pipeline.services.skips import skips_by_workflow

FAILED_LISTED = 100  # failed executions listed in full (all are counted)


@dataclass(frozen=True)
class RegisterRow:
    tenant_id: str
    status: str
    policy_type: str
    policies: int


def policy_register(session: Session) -> list[RegisterRow]:
    """Live (not deleted) policies by tenant, status and type."""
    rows = session.execute(
        select(Policy.tenant_id, Policy.status, Policy.policy_type, func.count())
        .where(Policy.deleted_at.is_(None))
        .group_by(Policy.tenant_id, Policy.status, Policy.policy_type)
        .order_by(Policy.tenant_id, Policy.status, Policy.policy_type)
    )
    return [RegisterRow(str(t), str(s), str(p), int(n)) for t, s, p, n in rows]


@dataclass(frozen=True)
class WaitingStep:
    """An approval step asked and not decided yet."""

    approval_id: int
    tenant_id: str
    entity: str  # "policy 12"
    workflow: str
    execution_id: int
    step: str  # its name, or "step 2"
    approvers: str  # "users carol; roles compliance_officer"
    requested_at: datetime | None
    due_at: datetime | None
    age_s: float
    overdue: bool


def _approvers(step: Approval) -> str:
    parts = []
    if step.approver_users:
        parts.append("users " + ", ".join(step.approver_users))
    if step.approver_roles:
        parts.append("roles " + ", ".join(step.approver_roles))
    return "; ".join(parts) or "-"


def approval_backlog(session: Session, now: datetime) -> list[WaitingStep]:
    """Every step waiting for a decision, oldest request first."""
    rows = session.execute(
        select(Approval, Workflow.name)
        .join(WorkflowExecution, WorkflowExecution.id == Approval.execution_id)
        .join(Workflow, Workflow.id == WorkflowExecution.workflow_id)
        .where(Approval.status == ApprovalStatus.PENDING)
        .order_by(Approval.requested_at, Approval.id)
    )
    steps = []
    for approval, workflow in rows:
        asked = approval.requested_at or approval.created_at
        steps.append(
            WaitingStep(
                approval_id=approval.id,
                tenant_id=approval.tenant_id,
                entity=f"{approval.entity_type} {approval.entity_id}",
                workflow=str(workflow),
                execution_id=approval.execution_id,
                step=approval.name or f"step {approval.step_index + 1}",
                approvers=_approvers(approval),
                requested_at=approval.requested_at,
                due_at=approval.due_at,
                age_s=max(0.0, (now - asked).total_seconds()),
                overdue=approval.due_at is not None and approval.due_at < now,
            )
        )
    return steps


@dataclass(frozen=True)
class FailedExecution:
    execution_id: int
    tenant_id: str
    workflow: str
    entity: str
    reason: str
    finished_at: datetime | None


@dataclass
class Outcomes:
    """Executions created in the window, by tenant, workflow and status; and every execution
    failed and not resolved since (retried to success or cancelled), whatever its age."""

    since: datetime
    by_workflow: list[tuple[str, str, str, int]] = field(default_factory=list)
    failed: list[FailedExecution] = field(default_factory=list)
    failed_total: int = 0


def workflow_outcomes(session: Session, now: datetime, window: timedelta) -> Outcomes:
    """What the workflows did over `window` up to `now`, and what failed and is unresolved."""
    since = now - window
    outcomes = Outcomes(since)
    counted = session.execute(
        select(WorkflowExecution.tenant_id, Workflow.name, WorkflowExecution.status, func.count())
        .join(Workflow, Workflow.id == WorkflowExecution.workflow_id)
        .where(WorkflowExecution.created_at >= since)
        .group_by(WorkflowExecution.tenant_id, Workflow.name, WorkflowExecution.status)
        .order_by(WorkflowExecution.tenant_id, Workflow.name, WorkflowExecution.status)
    )
    by_workflow = {(str(t), str(w), str(s)): int(n) for t, w, s, n in counted}
    for (tenant, name), n in skips_by_workflow(session, since).items():
        key = (tenant, name, str(ExecutionStatus.SKIPPED))
        by_workflow[key] = by_workflow.get(key, 0) + n
    outcomes.by_workflow = [(t, w, s, n) for (t, w, s), n in sorted(by_workflow.items())]
    failed = WorkflowExecution.status == ExecutionStatus.FAILED
    outcomes.failed_total = int(
        session.scalar(select(func.count()).select_from(WorkflowExecution).where(failed)) or 0
    )
    rows = session.execute(
        select(WorkflowExecution, Workflow.name)
        .join(Workflow, Workflow.id == WorkflowExecution.workflow_id)
        .where(failed)
        .order_by(WorkflowExecution.id.desc())
        .limit(FAILED_LISTED)
    )
    outcomes.failed = [
        FailedExecution(
            e.id, e.tenant_id, str(name), f"{e.entity_type} {e.entity_id}",
            e.error or e.status_reason or "-", e.finished_at,
        )
        for e, name in rows
    ]  # fmt: skip
    return outcomes


@dataclass(frozen=True)
class ChangeBacklog:
    """Changes committed and not processed yet, per tenant, with the oldest one's time.
    `settled_up_to`: every change up to this id is processed (where the next read starts)."""

    by_tenant: dict[str, tuple[int, datetime]]
    settled_up_to: int

    @property
    def unprocessed(self) -> int:
        return sum(n for n, _ in self.by_tenant.values())

    def oldest_age_s(self, now: datetime) -> float:
        if not self.by_tenant:
            return 0.0
        oldest = min(at for _, at in self.by_tenant.values())
        return max(0.0, (now - oldest).total_seconds())


def change_backlog(session: Session, *, after: int = 0) -> ChangeBacklog:
    """The unprocessed changes above `after` (a previous `settled_up_to`, so a read costs what
    the recent changes cost, not what the table holds; 0 reads the whole table). A change
    table restored behind `after` makes it read from the start."""
    if after and session.get(EntityChange, after) is None:
        after = 0
    first_open = session.scalar(
        select(func.min(EntityChange.id)).where(EntityChange.id > after, unprocessed())
    )
    if first_open is None:
        last = session.scalar(select(func.max(EntityChange.id)).where(EntityChange.id > after))
        return ChangeBacklog({}, int(last) if last is not None else after)
    rows = session.execute(
        select(EntityChange.tenant_id, func.count(), func.min(EntityChange.created_at))
        .where(EntityChange.id >= first_open, unprocessed())
        .group_by(EntityChange.tenant_id)
    )
    by_tenant = {str(t): (int(n), at) for t, n, at in rows}
    return ChangeBacklog(by_tenant, int(first_open) - 1)
