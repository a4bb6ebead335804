"""`request_approval`: create the approval steps, ask the first (or all), and wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gov_pipeline.db.models import Approval
from gov_pipeline.domain.approval_flow import initial_statuses
from gov_pipeline.domain.definitions import RequestApprovalAction
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.domain.statuses import ApprovalStatus
from gov_pipeline.engine.actions.base import ActionContext
from gov_pipeline.services import approvals


def request_approval(ctx: ActionContext, action: RequestApprovalAction) -> dict[str, Any]:
    now = datetime.now(UTC)
    rows = []
    for index, (step, status) in enumerate(
        zip(action.steps, initial_statuses(action.mode, len(action.steps)), strict=True)
    ):
        is_open = status is ApprovalStatus.PENDING
        rows.append(
            Approval(
                tenant_id=ctx.execution.tenant_id,
                execution_id=ctx.execution.id,
                entity_type=ctx.execution.entity_type,
                entity_id=ctx.execution.entity_id,
                step_index=index,
                name=step.name,
                mode=action.mode,
                approver_users=list(step.approvers.users),
                # Plain strings: a refused decider is shown this list.
                approver_roles=[r.value for r in step.approvers.roles],
                status=status,
                quorum=step.quorum,
                allow_delegation=step.allow_delegation,
                # Unset (SQL NULL) without one: the escalator looks for steps that have one.
                **(
                    {"escalation": step.escalation.model_dump(mode="json")}
                    if step.escalation
                    else {}
                ),
                requested_at=now if is_open else None,
                due_at=now + timedelta(hours=step.due_in_hours)
                if is_open and step.due_in_hours
                else None,
            )
        )
    ctx.session.add_all(rows)
    ctx.session.flush()
    _check_quorums(ctx, rows)
    opened = [r for r in rows if r.status == ApprovalStatus.PENDING]
    asked = approvals.notify_approvers(ctx.session, opened, ctx.workflow.name, ctx.action_run.id)
    return {
        "approvals": [r.id for r in rows],
        "mode": action.mode,
        "asked": asked,
        "awaiting": True,
    }


def _check_quorums(ctx: ActionContext, rows: list[Approval]) -> None:
    """A step whose quorum more approvers must reach than may decide it would wait
    forever: the action fails instead, naming it (the action's transaction is rolled back)."""
    for row in rows:
        eligible = approvals.eligible_approvers(ctx.session, row)
        if row.quorum > len(eligible):
            label = row.name or f"step {row.step_index + 1}"
            raise InvalidInputError(
                "quorum",
                f"{label} needs {row.quorum} approvers; {len(eligible)} may decide it "
                f"(users {row.approver_users or '-'}, roles {row.approver_roles or '-'})",
            )
