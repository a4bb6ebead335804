"""Continue an approval flow after a decision (an `approval_decided` change), exactly once."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gov_pipeline.config import Settings
from gov_pipeline.db.models import Approval, EntityChange, Workflow, WorkflowExecution
from gov_pipeline.domain.approval_flow import FlowOutcome, next_move
from gov_pipeline.domain.definitions import RequestApprovalAction
from gov_pipeline.domain.lifecycle import ALLOWED_TRANSITIONS
from gov_pipeline.domain.statuses import (
    ApprovalMode,
    ApprovalStatus,
    ExecutionStatus,
    PolicyStatus,
)
from gov_pipeline.services import approvals as approval_service
from gov_pipeline.services import policies
from gov_pipeline.services.engine import (
    ExecutionReport,
    claim,
    insert_marker,
    load_entity,
    run_actions,
)
from gov_pipeline.services.workflows import load_version

log = logging.getLogger(__name__)


def continue_after_decision(
    session: Session, change: EntityChange, settings: Settings
) -> ExecutionReport | None:
    """Move the flow on after the decision recorded by `change`, in the caller's transaction.

    Returns:
        What happened, or None when there was nothing to do (already handled, or the
        execution is no longer waiting).

    Raises:
        ActionFailedError: a follow-up action failed (the caller rolls back and retries).
    """
    data = change.new_values or {}
    execution_id = data.get("execution_id")
    if not isinstance(execution_id, int):
        return None
    execution = claim(session, execution_id, ExecutionStatus.AWAITING_APPROVAL)
    if execution is None:
        return None
    # One continuation per decision: a replayed change finds its marker and stops.
    marker = f"decision:{change.id}"
    marker_run_id = insert_marker(session, execution, marker, "approval_decision", dict(data))
    if marker_run_id is None:
        execution.status = ExecutionStatus.AWAITING_APPROVAL.value
        return None
    workflow = session.get(Workflow, execution.workflow_id)
    assert workflow is not None  # foreign key
    loaded = load_version(session, workflow, execution.workflow_version)
    block = loaded.definition.actions[-1]
    assert isinstance(block, RequestApprovalAction)  # awaiting_approval implies it
    steps = list(
        session.scalars(
            select(Approval)
            .where(Approval.execution_id == execution.id)
            .order_by(Approval.step_index)
        )
    )
    move = next_move(ApprovalMode(steps[0].mode), [ApprovalStatus(s.status) for s in steps])
    now = datetime.now(UTC)
    done: list[str] = []
    if move.outcome in (FlowOutcome.WAIT, FlowOutcome.OPEN):
        opened = [s for s in steps if s.step_index in move.open_steps]
        for step in opened:
            hours = block.steps[step.step_index].due_in_hours
            step.status = ApprovalStatus.PENDING.value
            step.requested_at = now
            step.due_at = now + timedelta(hours=hours) if hours else None
        session.flush()
        approval_service.notify_approvers(session, opened, loaded.name, marker_run_id)
        execution.status = ExecutionStatus.AWAITING_APPROVAL.value
        log.info("execution %s: %s, opened steps %s", execution.id, move.outcome, move.open_steps)
        return ExecutionReport(execution.id, loaded.name, execution.status, [marker])

    for step in steps:
        if step.status in (ApprovalStatus.WAITING.value, ApprovalStatus.PENDING.value):
            step.status = ApprovalStatus.SKIPPED.value
    if move.outcome is FlowOutcome.CHANGES_REQUESTED:
        _back_to_draft(session, execution)
        done, _ = run_actions(
            session,
            settings,
            loaded,
            execution,
            block.on_changes_requested,
            "on_changes_requested.",
        )
    elif move.outcome is FlowOutcome.REJECTED:
        done, _ = run_actions(
            session, settings, loaded, execution, block.on_rejected, "on_rejected."
        )
    else:
        done, _ = run_actions(
            session, settings, loaded, execution, block.on_approved, "on_approved."
        )
    execution.status = ExecutionStatus.COMPLETED.value
    execution.finished_at = now
    execution.output = {
        **(execution.output or {}),
        "outcome": move.outcome.value,
        "follow_up": done,
    }
    log.info("execution %s: approval flow %s, ran %s", execution.id, move.outcome, done)
    return ExecutionReport(execution.id, loaded.name, execution.status, [marker, *done])


def _back_to_draft(session: Session, execution: WorkflowExecution) -> None:
    """Changes requested: the policy goes back to draft when the lifecycle allows it."""
    entity = load_entity(session, execution.tenant_id, execution.entity_type, execution.entity_id)
    if entity is None or PolicyStatus.DRAFT not in ALLOWED_TRANSITIONS[PolicyStatus(entity.status)]:
        return
    policies.transition_status(
        session,
        tenant_id=execution.tenant_id,
        policy_id=entity.id,
        to_status=PolicyStatus.DRAFT.value,
        actor=policies.Actor("workflow:changes-requested", execution.id, execution.chain_depth + 1),
    )
