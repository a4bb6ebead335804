"""Continue an approval flow after a decision (an `approval_decided` change), exactly once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gov_pipeline.config import Settings
from gov_pipeline.db.models import (
    Approval,
    ApprovalDecision,
    EntityChange,
    User,
    Workflow,
    WorkflowExecution,
)
from gov_pipeline.domain.approval_flow import FlowOutcome, NextMove, next_move
from gov_pipeline.domain.definitions import RequestApprovalAction
from gov_pipeline.domain.entities import kind_of
from gov_pipeline.domain.statuses import ApprovalMode, ApprovalStatus, ExecutionStatus
from gov_pipeline.engine.execution import ExecutionReport, claim, insert_marker, run_actions
from gov_pipeline.services import approvals as approval_service
from gov_pipeline.services import records
from gov_pipeline.services.entities import load_entity
from gov_pipeline.services.workflows import LoadedWorkflow, load_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecisionRefused:
    """A decision change that cannot continue any flow: it names an execution, approval or
    approver that does not belong with it. Nothing else is changed; the change is recorded
    as refused with `reason`."""

    change_id: int
    reason: str


def check_decision(
    session: Session, change: EntityChange, row: ApprovalDecision | None = None
) -> str | None:
    """Why the decision recorded by `change` must be refused; None when it may continue.

    The change, its execution and its approval must belong to one tenant and one entity,
    and the decider must be a user of that tenant. A decision `row` that was applied
    (`apply_decision` checked the decider and the step then) must be the one the change
    names; without a row (a change recorded before revision 0005), the approval must be
    decided as the change says, by an approver of that step.
    """
    data = change.new_values or {}
    execution_id, approval_id = data.get("execution_id"), data.get("approval_id")
    if not isinstance(execution_id, int) or not isinstance(approval_id, int):
        return "a decision change must name an execution_id and an approval_id (integers)"
    tenant = change.tenant_id
    execution = session.get(WorkflowExecution, execution_id)
    if execution is None or execution.tenant_id != tenant:
        return f"execution {execution_id} not found in tenant {tenant!r}"
    approval = session.get(Approval, approval_id)
    if approval is None or approval.tenant_id != tenant:
        return f"approval {approval_id} not found in tenant {tenant!r}"
    if approval.execution_id != execution.id:
        owner = approval.execution_id
        return f"approval {approval_id} is a step of execution {owner}, not {execution_id}"
    entity = (change.entity_type, change.entity_id)
    if entity != (approval.entity_type, approval.entity_id) or entity != (
        execution.entity_type,
        execution.entity_id,
    ):
        return (
            f"the change is about {entity[0]} {entity[1]}, its approval about "
            f"{approval.entity_type} {approval.entity_id}"
        )
    decider = data.get("decided_by")
    if row is not None:
        if row.approval_id != approval_id or row.decided_by != decider:
            return f"decision {row.id} is not the one change {change.id} names"
        if session.get(User, (tenant, decider)) is None:
            return f"user {decider!r} not found in tenant {tenant!r}"
        return None
    if not isinstance(decider, str) or approval.decided_by != decider:
        return f"approval {approval_id} was not decided by {decider!r}"
    if approval.status != data.get("approval_status"):
        return f"approval {approval_id} is {approval.status}, not {data.get('approval_status')}"
    if session.get(User, (tenant, decider)) is None:
        return f"user {decider!r} not found in tenant {tenant!r}"
    if not approval_service.may_decide(session, approval, decider):
        return f"user {decider!r} is not an approver of approval {approval_id}"
    return None


class _Refused(Exception):
    pass


def settle_decision(session: Session, change: EntityChange) -> str | None:
    """Apply the decision row `change` was captured from if no one has yet (another
    application's INSERT) and check it; why it is refused, or None. A refused row keeps its
    reason and nothing else changes. A change without a decision row (recorded before
    revision 0005) is only checked."""
    decision_id = (change.new_values or {}).get("decision_id")
    if decision_id is None:
        return check_decision(session, change)
    row = session.get(ApprovalDecision, decision_id) if isinstance(decision_id, int) else None
    if row is None or row.tenant_id != change.tenant_id or row.change_id != change.id:
        return f"decision {decision_id!r} not found in tenant {change.tenant_id!r}"
    if row.outcome == approval_service.DECISION_REFUSED:
        return row.reason or "refused"
    if row.outcome == approval_service.DECISION_ACCEPTED:
        return check_decision(session, change, row)
    try:
        with session.begin_nested():
            approval_service.apply_decision(session, row)
            reason = check_decision(session, change, row)
            if reason is not None:
                raise _Refused(reason)  # undoes the decision's effect
    except approval_service.REFUSALS as exc:
        reason = str(exc)
    except _Refused as exc:
        reason = str(exc)
    if reason is not None:
        approval_service.refuse_decision(row, reason)
    return reason


def continue_after_decision(
    session: Session, change: EntityChange, settings: Settings, run_id: str | None = None
) -> ExecutionReport | DecisionRefused | None:
    """Move the flow on after the decision recorded by `change`, in the caller's transaction
    (`run_id`: the Dagster run doing it, recorded on the execution).

    Returns:
        What happened; a refusal (the change names what does not belong together, see
        `check_decision`); or None when there was nothing to do (already handled, or the
        execution is no longer waiting).

    Raises:
        ActionFailedError: a follow-up action failed (the caller rolls back and retries).
    """
    reason = settle_decision(session, change)
    if reason is not None:
        log.warning("decision change %s refused: %s", change.id, reason)
        return DecisionRefused(change.id, reason)
    execution_id = int((change.new_values or {})["execution_id"])
    values = {"dagster_run_id": run_id} if run_id else {}
    execution = claim(session, execution_id, ExecutionStatus.AWAITING_APPROVAL, **values)
    if execution is None:
        return None
    # One continuation per decision: a replayed change finds its marker and stops.
    marker = f"decision:{change.id}"
    data = dict(change.new_values or {})
    marker_run_id = insert_marker(session, execution, marker, "approval_decision", data)
    if marker_run_id is None:
        execution.status = ExecutionStatus.AWAITING_APPROVAL
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
    if move.outcome is FlowOutcome.WITHDRAWN:
        # Cancelling ends the execution with its steps, so its claim fails before this;
        # should withdrawn steps meet a waiting execution anyway, nothing follows.
        execution.status = ExecutionStatus.CANCELLED
        execution.status_reason = execution.status_reason or "its approval steps were withdrawn"
        execution.finished_at = execution.finished_at or datetime.now(UTC)
        return ExecutionReport(execution.id, loaded.name, execution.status, [marker])
    if move.outcome in (FlowOutcome.WAIT, FlowOutcome.OPEN):
        _open_steps(session, execution, loaded.name, block, steps, move, marker_run_id)
        return ExecutionReport(execution.id, loaded.name, execution.status, [marker])
    done = _end_flow(session, settings, loaded, execution, block, steps, move.outcome)
    return ExecutionReport(execution.id, loaded.name, execution.status, [marker, *done])


def _open_steps(
    session: Session,
    execution: WorkflowExecution,
    workflow_name: str,
    block: RequestApprovalAction,
    steps: list[Approval],
    move: NextMove,
    marker_run_id: int,
) -> None:
    """The flow goes on: open the steps `move` names and ask their approvers; the execution
    keeps waiting."""
    now = datetime.now(UTC)
    opened = [s for s in steps if s.step_index in move.open_steps]
    for step in opened:
        hours = block.steps[step.step_index].due_in_hours
        step.status = ApprovalStatus.PENDING
        step.requested_at = now
        step.due_at = now + timedelta(hours=hours) if hours else None
    session.flush()
    approval_service.notify_approvers(session, opened, workflow_name, marker_run_id)
    execution.status = ExecutionStatus.AWAITING_APPROVAL
    log.info("execution %s: %s, opened steps %s", execution.id, move.outcome, move.open_steps)


def _end_flow(
    session: Session,
    settings: Settings,
    loaded: LoadedWorkflow,
    execution: WorkflowExecution,
    block: RequestApprovalAction,
    steps: list[Approval],
    outcome: FlowOutcome,
) -> list[str]:
    """The flow is decided: skip the steps still open, run the follow-ups of `outcome` and
    complete the execution.

    Returns:
        The step keys of the follow-ups run.
    """
    now = datetime.now(UTC)
    for step in steps:
        if step.status in (ApprovalStatus.WAITING, ApprovalStatus.PENDING):
            step.status = ApprovalStatus.SKIPPED
    if outcome is FlowOutcome.CHANGES_REQUESTED:
        _send_back(session, execution)
        actions, prefix = block.on_changes_requested, "on_changes_requested."
    elif outcome is FlowOutcome.REJECTED:
        actions, prefix = block.on_rejected, "on_rejected."
    else:
        actions, prefix = block.on_approved, "on_approved."
    done, _ = run_actions(session, settings, loaded, execution, actions, prefix)
    execution.status = ExecutionStatus.COMPLETED
    execution.finished_at = now
    execution.output = {**(execution.output or {}), "outcome": outcome, "follow_up": done}
    log.info("execution %s: approval flow %s, ran %s", execution.id, outcome, done)
    return done


def _send_back(session: Session, execution: WorkflowExecution) -> None:
    """Changes requested: the entity goes back to its lifecycle's `revise_to` status (a
    policy to draft) when the lifecycle allows the move from where it stands."""
    entity = load_entity(session, execution.tenant_id, execution.entity_type, execution.entity_id)
    if entity is None:
        return
    target = kind_of(execution.entity_type).lifecycle.sent_back_from(entity.status)
    if target is None:
        return
    records.transition_record(
        session,
        execution.entity_type,
        tenant_id=execution.tenant_id,
        record_id=entity.id,
        to_status=target,
        actor=records.Actor("workflow:changes-requested", execution.id, execution.chain_depth + 1),
    )
