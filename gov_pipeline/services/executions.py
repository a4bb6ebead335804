"""Executions for operators: list, show with their steps, queue a failed one again."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from gov_pipeline.db.models import (
    ActionRun,
    Approval,
    EntityChange,
    Task,
    WebhookDelivery,
    Workflow,
    WorkflowExecution,
    row_to_dict,
)
from gov_pipeline.domain.errors import ConflictError, InvalidInputError, NotFoundError
from gov_pipeline.domain.statuses import ActionRunStatus, ChangeKind, ExecutionStatus
from gov_pipeline.services.tenants import require_tenant
from gov_pipeline.services.webhooks import DeliveryStatus

MAX_LIST = 1000


def list_executions(
    session: Session,
    tenant_id: str,
    *,
    status: str | None = None,
    workflow: str | None = None,
    policy_id: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest first, with the workflow's name.

    Raises:
        InvalidInputError: bad limit or status.
        NotFoundError: unknown tenant.
    """
    require_tenant(session, tenant_id)
    if not 1 <= limit <= MAX_LIST:
        raise InvalidInputError("limit", f"must be between 1 and {MAX_LIST}")
    query = (
        select(WorkflowExecution, Workflow.name)
        .join(Workflow, Workflow.id == WorkflowExecution.workflow_id)
        .where(WorkflowExecution.tenant_id == tenant_id)
    )
    if status is not None:
        if status not in set(ExecutionStatus):
            known = ", ".join(ExecutionStatus)
            raise InvalidInputError("status", f"unknown status {status!r} (one of: {known})")
        query = query.where(WorkflowExecution.status == status)
    if workflow is not None:
        query = query.where(Workflow.name == workflow)
    if policy_id is not None:
        query = query.where(WorkflowExecution.entity_id == str(policy_id))
    rows = session.execute(query.order_by(WorkflowExecution.id.desc()).limit(limit)).all()
    return [{**row_to_dict(e), "workflow": name} for e, name in rows]


def get_execution(session: Session, tenant_id: str, execution_id: int | str) -> WorkflowExecution:
    """One execution of the tenant.

    Raises:
        InvalidInputError: not an id.
        NotFoundError: no such execution in this tenant.
    """
    try:
        eid = int(str(execution_id))
    except ValueError:
        raise InvalidInputError("execution", f"not an execution id: {execution_id!r}") from None
    execution = session.scalars(
        select(WorkflowExecution).where(
            WorkflowExecution.id == eid, WorkflowExecution.tenant_id == tenant_id
        )
    ).one_or_none()
    if execution is None:
        raise NotFoundError("execution", eid, tenant_id)
    return execution


def describe_execution(session: Session, tenant_id: str, execution_id: int | str) -> dict[str, Any]:
    """An execution with its workflow, action runs, approvals, tasks and deliveries."""
    execution = get_execution(session, tenant_id, execution_id)
    workflow = session.get(Workflow, execution.workflow_id)

    def rows(model: Any) -> list[dict[str, Any]]:
        found = session.scalars(
            select(model).where(model.execution_id == execution.id).order_by(model.id)
        )
        return [row_to_dict(r) for r in found]

    return {
        **row_to_dict(execution),
        "workflow": workflow.name if workflow else None,
        "action_runs": rows(ActionRun),
        "approvals": rows(Approval),
        "tasks": rows(Task),
        "webhook_deliveries": rows(WebhookDelivery),
    }


def retry_execution(session: Session, tenant_id: str, execution_id: int | str) -> str:
    """Make a failed execution run again, from where it failed.

    - Its actions committed and only a webhook delivery failed: the failed deliveries are
      queued again (re-running the actions would repeat their effects).
    - Its approval flow had started and a follow-up failed: it waits for approval again,
      and the decisions not yet handled are to be continued (`unhandled_decisions`).
    - Otherwise nothing of the failed attempts was kept: it goes back to pending.

    Returns:
        `deliveries`, `continuation` or `pending`: what is to be retried.

    Raises:
        ConflictError: the execution has not failed.
    """
    execution = get_execution(session, tenant_id, execution_id)
    if execution.status != ExecutionStatus.FAILED:
        raise ConflictError(f"execution {execution.id} is {execution.status}, not failed")
    failed_deliveries = session.scalars(
        select(WebhookDelivery).where(
            WebhookDelivery.execution_id == execution.id,
            WebhookDelivery.status == DeliveryStatus.FAILED,
        )
    ).all()
    _forget_failure_records(session, execution.id)
    execution.error = None
    execution.finished_at = None
    if failed_deliveries:
        for delivery in failed_deliveries:
            delivery.status = DeliveryStatus.PENDING
            delivery.attempts = 0
            delivery.next_attempt_at = None
        execution.status = ExecutionStatus.COMPLETED
        execution.status_reason = "webhook delivery queued again by retry"
        return "deliveries"
    started_approval = session.scalar(
        select(Approval.id).where(Approval.execution_id == execution.id).limit(1)
    )
    if started_approval is not None:
        execution.status = ExecutionStatus.AWAITING_APPROVAL
        execution.status_reason = "approval follow-up queued again by retry"
        return "continuation"
    execution.status = ExecutionStatus.PENDING
    execution.status_reason = None
    execution.attempts = 0
    return "pending"


def unhandled_decisions(session: Session, execution_id: int) -> list[int]:
    """Ids of the execution's `approval_decided` changes whose continuation did not commit."""
    decided = session.scalars(
        select(EntityChange.id)
        .where(
            EntityChange.caused_by_execution_id == execution_id,
            EntityChange.kind == ChangeKind.APPROVAL_DECIDED,
        )
        .order_by(EntityChange.id)
    ).all()
    handled = set(
        session.scalars(
            select(ActionRun.step_key).where(
                ActionRun.execution_id == execution_id, ActionRun.step_key.like("decision:%")
            )
        )
    )
    return [cid for cid in decided if f"decision:{cid}" not in handled]


def _forget_failure_records(session: Session, execution_id: int) -> None:
    # A new failure must be recorded, and its owner told, again.
    session.execute(
        delete(ActionRun).where(
            ActionRun.execution_id == execution_id,
            (ActionRun.status == ActionRunStatus.FAILED) | (ActionRun.step_key == "failure-notice"),
        )
    )
    session.execute(
        update(WorkflowExecution)
        .where(WorkflowExecution.id == execution_id)
        .values(updated_at=datetime.now().astimezone())
    )
