"""Executions for operators: list, show with their steps, queue a failed one again, cancel
one, and the failed ones a command should report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, cast, delete, select, update
from sqlalchemy.orm import Session

from gov_pipeline.db.models import (
    ActionRun,
    Approval,
    EmailDelivery,
    EntityChange,
    Task,
    WebhookDelivery,
    Workflow,
    WorkflowExecution,
    row_to_dict,
)
from gov_pipeline.domain.errors import ConflictError, InvalidInputError, NotFoundError
from gov_pipeline.domain.statuses import (
    FAILURE_NOTICE,
    OPEN_APPROVAL_STATUSES,
    ActionRunStatus,
    ApprovalStatus,
    ChangeKind,
    DeliveryStatus,
    ExecutionStatus,
)
from gov_pipeline.domain.storable import check_storable
from gov_pipeline.services.skips import list_skips
from gov_pipeline.services.tenants import check_identifier, require_tenant

log = logging.getLogger(__name__)

MAX_LIST = 1000
# What may be cancelled: what has not ended, and what ended failed (so that it is not
# retried). `in_progress` is never seen committed: an execution runs inside its claim's
# transaction, which cancelling waits for.
CANCELLABLE = frozenset(
    {ExecutionStatus.PENDING, ExecutionStatus.AWAITING_APPROVAL, ExecutionStatus.FAILED}
)
MAX_CANCEL_REASON_CHARS = 2000
_IDS_PER_QUERY = 1000


def list_executions(
    session: Session,
    tenant_id: str,
    *,
    status: str | None = None,
    workflow: str | None = None,
    entity: tuple[str, str] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest first, with the workflow's name (`entity`: only those about this (entity type,
    id)); the workflows a change skipped (`change_skips`) are entries with `id` None.

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
    if entity is not None:
        query = query.where(
            WorkflowExecution.entity_type == entity[0], WorkflowExecution.entity_id == entity[1]
        )
    rows = session.execute(query.order_by(WorkflowExecution.id.desc()).limit(limit)).all()
    found = [{**row_to_dict(e), "workflow": name} for e, name in rows]
    if status not in (None, ExecutionStatus.SKIPPED):
        return found
    # Compact skips (one row per change) show as skipped entries without an id.
    skipped = list_skips(session, tenant_id, workflow=workflow, entity=entity, limit=limit)
    merged = sorted(
        found + skipped, key=lambda r: datetime.fromisoformat(str(r["created_at"])), reverse=True
    )
    return merged[:limit]


def get_execution(
    session: Session, tenant_id: str, execution_id: int | str, *, for_update: bool = False
) -> WorkflowExecution:
    """One execution of the tenant.

    Args:
        for_update: lock its row for the caller's transaction (and read it afresh).

    Raises:
        InvalidInputError: not an id.
        NotFoundError: no such execution in this tenant.
    """
    try:
        eid = int(str(execution_id))
    except ValueError:
        raise InvalidInputError("execution", f"not an execution id: {execution_id!r}") from None
    query = select(WorkflowExecution).where(
        WorkflowExecution.id == eid, WorkflowExecution.tenant_id == tenant_id
    )
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    execution = session.scalars(query).one_or_none()
    if execution is None:
        raise NotFoundError("execution", eid, tenant_id)
    return execution


def describe_execution(session: Session, tenant_id: str, execution_id: int | str) -> dict[str, Any]:
    """An execution with its workflow, action runs, approvals, tasks, webhook deliveries
    and the emails of its notifications."""
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
        "email_deliveries": rows(EmailDelivery),
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
    # A new failure must be recorded, and its owner told, again. The failed steps' runs have
    # no effects and go; the failure notice stays (its notification points at it), renamed
    # after itself so that the next failure's notice can take the key.
    session.execute(
        delete(ActionRun).where(
            ActionRun.execution_id == execution_id, ActionRun.status == ActionRunStatus.FAILED
        )
    )
    session.execute(
        update(ActionRun)
        .where(ActionRun.execution_id == execution_id, ActionRun.step_key == FAILURE_NOTICE)
        .values(step_key=FAILURE_NOTICE + ":" + cast(ActionRun.id, String))
    )
    session.execute(
        update(WorkflowExecution)
        .where(WorkflowExecution.id == execution_id)
        .values(updated_at=datetime.now().astimezone())
    )


@dataclass(frozen=True)
class CancelledExecution:
    """What cancelling an execution did."""

    execution_id: int
    tenant_id: str
    workflow: str  # the workflow's name
    previous_status: str  # pending, awaiting_approval or failed
    status_reason: str  # as recorded: "cancelled by <actor>" and ": <reason>" if given
    withdrawn_approvals: tuple[int, ...]  # ids of the approval steps withdrawn, ascending
    cancelled_deliveries: tuple[int, ...]  # ids of the webhook deliveries not to be sent


def cancel_execution(
    session: Session,
    *,
    tenant_id: str,
    execution_id: int | str,
    actor: str,
    reason: str | None = None,
) -> CancelledExecution:
    """End an execution `cancelled`, in the caller's transaction (flushed, not committed).

    Its open approval steps (waiting or pending) are withdrawn and its pending webhook
    deliveries cancelled, so nothing more runs for it: the engine claims only pending and
    awaiting-approval executions, and a withdrawn step cannot be decided.

    Args:
        actor: the user who cancels; recorded in the status reason with `reason`.

    Returns:
        The execution's id, what it was, and what was withdrawn and stopped.

    Raises:
        InvalidInputError: not an execution id, or a malformed actor or reason.
        NotFoundError: no such execution in this tenant.
        ConflictError: the execution is completed, skipped or cancelled already.
    """
    status_reason = _cancel_reason(actor, reason)
    # Locked first: an engine claiming it waits, then finds it no longer claimable.
    execution = get_execution(session, tenant_id, execution_id, for_update=True)
    if execution.status == ExecutionStatus.CANCELLED:
        raise ConflictError(f"execution {execution.id} is already cancelled")
    if execution.status not in CANCELLABLE:
        raise ConflictError(
            f"execution {execution.id} is {execution.status}: only a pending, "
            "awaiting_approval or failed execution can be cancelled"
        )
    previous = execution.status
    withdrawn, stopped = _withdraw_open_work(session, execution.id)
    execution.status = ExecutionStatus.CANCELLED
    execution.status_reason = status_reason
    execution.finished_at = datetime.now(UTC)
    session.flush()
    workflow = session.get(Workflow, execution.workflow_id)
    log.info(
        "execution %s cancelled (was %s) by %s: withdrew approvals %s, stopped deliveries %s",
        execution.id, previous, actor, withdrawn, stopped,
    )  # fmt: skip
    return CancelledExecution(
        execution_id=execution.id,
        tenant_id=execution.tenant_id,
        workflow=workflow.name if workflow else "",
        previous_status=str(previous),
        status_reason=status_reason,
        withdrawn_approvals=tuple(withdrawn),
        cancelled_deliveries=tuple(stopped),
    )


def _withdraw_open_work(session: Session, execution_id: int) -> tuple[list[int], list[int]]:
    """Withdraw the execution's open approval steps and cancel its pending deliveries.

    Returns:
        The ids of the steps withdrawn and of the deliveries cancelled.
    """
    # Conditional updates: a step decided (or a delivery sent) meanwhile is left as it is.
    withdrawn = session.scalars(
        update(Approval)
        .where(
            Approval.execution_id == execution_id,
            Approval.status.in_(list(OPEN_APPROVAL_STATUSES)),
        )
        .values(status=ApprovalStatus.WITHDRAWN)
        .returning(Approval.id)
    ).all()
    stopped = session.scalars(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.execution_id == execution_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .values(status=DeliveryStatus.CANCELLED)
        .returning(WebhookDelivery.id)
    ).all()
    return sorted(withdrawn), sorted(stopped)


def _cancel_reason(actor: str, reason: str | None) -> str:
    """The status reason of a cancelled execution.

    Raises:
        InvalidInputError: a malformed actor, or a reason that cannot be stored or is long.
    """
    check_identifier("actor", actor)
    check_storable("reason", reason)
    text = " ".join((reason or "").split())  # one line, as it is shown
    if len(text) > MAX_CANCEL_REASON_CHARS:
        raise InvalidInputError("reason", f"at most {MAX_CANCEL_REASON_CHARS} characters")
    return f"cancelled by {actor}: {text}" if text else f"cancelled by {actor}"


@dataclass(frozen=True)
class FailedExecution:
    """An execution that ended failed, and why: what a command reports."""

    execution_id: int
    tenant_id: str
    workflow: str
    entity_type: str
    entity_id: str
    reason: str


def failed_since(
    session: Session,
    since: datetime,
    *,
    change_ids: Sequence[int] = (),
    execution_ids: Sequence[int] = (),
) -> list[FailedExecution]:
    """The executions of `change_ids`, and the executions `execution_ids`, that are failed
    and ended at or after `since` (all tenants the session sees), in id order."""
    found: dict[int, FailedExecution] = {}
    parts = [
        WorkflowExecution.change_id.in_(list(change_ids[i : i + _IDS_PER_QUERY]))
        for i in range(0, len(change_ids), _IDS_PER_QUERY)
    ] + [
        WorkflowExecution.id.in_(list(execution_ids[i : i + _IDS_PER_QUERY]))
        for i in range(0, len(execution_ids), _IDS_PER_QUERY)
    ]
    for part in parts:
        rows = session.execute(
            select(WorkflowExecution, Workflow.name)
            .join(Workflow, Workflow.id == WorkflowExecution.workflow_id)
            .where(
                part,
                WorkflowExecution.status == ExecutionStatus.FAILED,
                WorkflowExecution.finished_at >= since,
            )
        )
        for execution, name in rows:
            found[execution.id] = FailedExecution(
                execution.id, execution.tenant_id, name, execution.entity_type,
                execution.entity_id, execution.error or execution.status_reason or "",
            )  # fmt: skip
    return [found[i] for i in sorted(found)]
