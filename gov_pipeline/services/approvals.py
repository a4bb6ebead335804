"""Approval decisions: only a listed approver decides an open step.

Every decision is a row of `approval_decisions`, whoever writes it (this module, or another
application's INSERT: docs/integration.md); the database captures each row as an
`approval_decided` change, so continuation runs like any other change. `apply_decision` is
the one check and effect of a decision: `decide` applies it at once (the caller learns of
a refusal as an error), processing applies a decision another writer left pending (a
refusal is recorded on the row with its reason).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gov_pipeline.db.engine import is_postgres
from gov_pipeline.db.models import (
    Approval,
    ApprovalDecision,
    EntityChange,
    User,
    WorkflowExecution,
)
from gov_pipeline.domain.approval_flow import QuorumState, quorum_state
from gov_pipeline.domain.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from gov_pipeline.domain.statuses import (
    ApprovalStatus,
    ExecutionStatus,
    NotificationType,
)
from gov_pipeline.domain.storable import check_storable
from gov_pipeline.services import notifications, records
from gov_pipeline.services.entities import load_entity
from gov_pipeline.services.tenants import (
    check_identifier,
    require_tenant,
    roles_of,
    users_with_roles,
)

DECISIONS = {
    "approve": ApprovalStatus.APPROVED,
    "reject": ApprovalStatus.REJECTED,
    "request_changes": ApprovalStatus.CHANGES_REQUESTED,
}
SIGNATURE_TYPES = ("drawn", "uploaded", "typed")
# What may happen to a decision row: applied, refused (with its reason), or neither yet.
DECISION_PENDING, DECISION_ACCEPTED, DECISION_REFUSED = "pending", "accepted", "refused"
# The errors that refuse a decision (anything else is a failure to retry).
REFUSALS = (InvalidInputError, NotFoundError, ConflictError, PermissionDeniedError)
MAX_SIGNATURE_CHARS = 1_000_000


def notify_approvers(
    session: Session, steps: list[Approval], workflow_name: str, action_run_id: int | None
) -> list[str]:
    """Tell the approvers of `steps` that a decision is needed (each user once)."""
    told: set[str] = set()
    for step in steps:
        recipients = notifications.resolve_recipients(
            session, step.tenant_id, users=step.approver_users, roles=step.approver_roles
        )
        fresh = [r for r in recipients if r not in told]
        told.update(fresh)
        label = step.name or f"step {step.step_index + 1}"
        notifications.send(
            session,
            tenant_id=step.tenant_id,
            recipients=fresh,
            type=NotificationType.WORKFLOW_APPROVAL_REQUIRED,
            priority="high",
            title=(
                f"Approval needed: {workflow_name} ({label})"
                f" for {step.entity_type} {step.entity_id}"
            ),
            message=f"Decide with: gov-pipeline approvals approve|reject|request-changes {step.id}",
            entity_type=step.entity_type,
            entity_id=step.entity_id,
            execution_id=step.execution_id,
            action_run_id=action_run_id,
        )
    return sorted(told)


def _signature(signature: dict[str, Any] | None) -> dict[str, Any] | None:
    if signature is None:
        return None
    check_storable("signature", signature)
    kind = signature.get("type")
    if kind not in SIGNATURE_TYPES:
        raise InvalidInputError("signature.type", f"must be one of {', '.join(SIGNATURE_TYPES)}")
    data = signature.get("data", "")
    if not isinstance(data, str) or len(data) > MAX_SIGNATURE_CHARS:
        raise InvalidInputError("signature.data", "must be a string of at most 1,000,000 chars")
    metadata = signature.get("metadata", {})
    if not isinstance(metadata, dict):
        raise InvalidInputError("signature.metadata", "must be a mapping")
    return {
        "type": kind,
        "data": data,
        "metadata": metadata,
        "signed_at": datetime.now(UTC).isoformat(),
    }


def _delegated(approval: Approval) -> tuple[set[str], set[str]]:
    """Who handed the step on, and to whom (delegations a reassignment ended aside)."""
    live = [d for d in approval.delegations if not d.get("ended")]
    return {str(d["from"]) for d in live}, {str(d["to"]) for d in live}


def reassign(session: Session, approval: Approval, users: list[str], roles: list[str]) -> None:
    """The open step is now for `users` and holders of `roles` to decide: the delegations
    end (kept, marked `ended`), and a quorum is lowered to how many may decide it now
    (decisions made before still count)."""
    ended = datetime.now(UTC).isoformat()
    approval.delegations = [{**d, "ended": d.get("ended") or ended} for d in approval.delegations]
    approval.approver_users, approval.approver_roles = users, roles
    approval.quorum = max(1, min(approval.quorum, len(eligible_approvers(session, approval))))


def may_decide(session: Session, approval: Approval, user_id: str) -> bool:
    """A listed user, a holder of a listed role, or a delegate — unless they delegated."""
    return _may(approval, user_id, roles_of(session, approval.tenant_id, user_id))


def _may(approval: Approval, user_id: str, roles: set[str]) -> bool:
    handed_on, delegates = _delegated(approval)
    if user_id in handed_on:
        return False
    if user_id in approval.approver_users or user_id in delegates:
        return True
    return bool(roles & set(approval.approver_roles))


def eligible_approvers(session: Session, approval: Approval) -> set[str]:
    """Everyone who may decide `approval` now (the M of a quorum's N of M)."""
    handed_on, delegates = _delegated(approval)
    listed = set(approval.approver_users) | set(
        users_with_roles(session, approval.tenant_id, approval.approver_roles)
    )
    return (listed | delegates) - handed_on


def votes(session: Session, approval: Approval) -> dict[str, str]:
    """The accepted decisions on `approval` so far, decider -> decision, in order."""
    query = (
        select(ApprovalDecision.decided_by, ApprovalDecision.decision)
        .where(
            ApprovalDecision.approval_id == approval.id,
            ApprovalDecision.tenant_id == approval.tenant_id,
            ApprovalDecision.outcome == DECISION_ACCEPTED,
        )
        .order_by(ApprovalDecision.id)
    )
    return {str(user): str(decision) for user, decision in session.execute(query)}


def get_approval(session: Session, tenant_id: str, approval_id: int | str) -> Approval:
    try:
        aid = int(str(approval_id))
    except ValueError:
        raise InvalidInputError("approval", f"not an approval id: {approval_id!r}") from None
    query = select(Approval).where(Approval.id == aid, Approval.tenant_id == tenant_id)
    if is_postgres(session):
        query = query.with_for_update()
    approval = session.scalars(query).one_or_none()
    if approval is None:
        raise NotFoundError("approval", aid, tenant_id)
    return approval


def decide(
    session: Session,
    *,
    tenant_id: str,
    approval_id: int | str,
    user_id: str,
    decision: str,
    comment: str | None = None,
    signature: dict[str, Any] | None = None,
) -> EntityChange:
    """Record a decision on an open approval step and apply it (see `apply_decision`).

    Args:
        decision: `approve`, `reject` or `request_changes`.

    Returns:
        The `approval_decided` change the database captured; the engine continues the flow
        when it processes it.

    Raises:
        InvalidInputError: unknown decision or malformed signature.
        NotFoundError: no such approval in this tenant.
        ConflictError: the step is not open (already decided, or waiting for earlier steps).
        PermissionDeniedError: `user_id` is not a listed approver of the step.
    """
    if decision not in DECISIONS:
        raise InvalidInputError("decision", f"must be one of {', '.join(DECISIONS)}")
    check_identifier("user", user_id)
    check_storable("comment", comment)
    _signature(signature)
    approval, _ = _open_step(session, tenant_id, approval_id, user_id)
    # Lock the entity first: its changes must get ids in commit order.
    if load_entity(session, tenant_id, approval.entity_type, approval.entity_id) is not None:
        records.get_record(
            session, approval.entity_type, tenant_id=tenant_id, record_id=approval.entity_id,
            include_deleted=True, for_update=True,
        )  # fmt: skip
    row = ApprovalDecision(
        tenant_id=tenant_id, approval_id=approval.id, decided_by=user_id, decision=decision,
        comment=comment, signature=signature,
    )  # fmt: skip
    session.add(row)
    session.flush()  # the capture trigger writes the change and its id on the row
    apply_decision(session, row)
    session.refresh(row, ["change_id"])
    change = session.get(EntityChange, row.change_id) if row.change_id else None
    assert change is not None  # the capture trigger wrote it
    return change


def apply_decision(session: Session, row: ApprovalDecision) -> Approval:
    """Check a recorded decision as `decide` does and apply it to its approval step: the
    decider is a listed approver, the step is open, its execution waits for it, all in the
    row's tenant. The row becomes `accepted`.

    Raises:
        InvalidInputError, NotFoundError, ConflictError, PermissionDeniedError: as `decide`;
            nothing is changed (the caller refuses the row, see `refuse_decision`).
    """
    if row.decision not in DECISIONS:
        raise InvalidInputError("decision", f"must be one of {', '.join(DECISIONS)}")
    approval, _ = _open_step(session, row.tenant_id, row.approval_id, row.decided_by)
    signed = _signature(row.signature)
    status = _status_after(session, approval, row)
    now = datetime.now(UTC)
    row.outcome = DECISION_ACCEPTED
    row.settled_at = now
    if status is not ApprovalStatus.PENDING:  # the step is decided
        approval.status = status
        approval.decided_by = row.decided_by
        approval.decided_at = now
        approval.comment = row.comment
        approval.signature = signed
    session.flush()
    return approval


def _status_after(session: Session, approval: Approval, row: ApprovalDecision) -> ApprovalStatus:
    """The step's status once `row` counts: its decision, or with a quorum, `pending`
    until enough distinct approvers approved or the quorum cannot be reached any more
    (then the decision that made it unreachable).

    Raises:
        ConflictError: with a quorum, the decider already voted on this step.
    """
    if approval.quorum <= 1:
        return DECISIONS[row.decision]
    cast = votes(session, approval)
    if row.decided_by in cast:
        raise ConflictError(
            f"user {row.decided_by!r} already decided approval {approval.id} "
            f"({cast[row.decided_by]}); it needs {approval.quorum} distinct approvers"
        )
    cast[row.decided_by] = row.decision
    approvals = sum(1 for d in cast.values() if d == "approve")
    state = quorum_state(
        approval.quorum, len(eligible_approvers(session, approval)), approvals,
        len(cast) - approvals,
    )  # fmt: skip
    if state is QuorumState.APPROVED:
        return ApprovalStatus.APPROVED
    if state is QuorumState.UNREACHABLE:
        return DECISIONS[row.decision]
    return ApprovalStatus.PENDING


def delegate(
    session: Session,
    *,
    tenant_id: str,
    approval_id: int | str,
    user_id: str,
    to_user: str,
    comment: str | None = None,
) -> Approval:
    """`user_id`, who may decide the open step, hands it to `to_user`, another active
    user of the tenant: the delegate may decide it, `user_id` no longer may. Recorded on
    the step (`delegations`) and told to the delegate.

    Raises:
        NotFoundError: no such approval, or `to_user` is not an active user of the tenant.
        PermissionDeniedError: `user_id` may not decide the step, or its definition does not
            allow delegation.
        ConflictError: the step is not open, `to_user` may decide it already, or (with a
            quorum) `user_id` has already voted.
        InvalidInputError: delegating to oneself.
    """
    check_identifier("user", to_user)
    check_storable("comment", comment)
    approval, _ = _open_step(session, tenant_id, approval_id, user_id)
    if not approval.allow_delegation:
        raise PermissionDeniedError(
            f"approval {approval.id} may not be delegated: its step does not allow it "
            "(allow_delegation: true in the workflow definition)"
        )
    if to_user == user_id:
        raise InvalidInputError("to", "an approver cannot delegate to themselves")
    target = session.get(User, (tenant_id, to_user))
    if target is None or not target.active:
        raise NotFoundError("user", to_user, tenant_id)
    if to_user in eligible_approvers(session, approval):
        raise ConflictError(f"user {to_user!r} may already decide approval {approval.id}")
    if user_id in votes(session, approval):
        raise ConflictError(f"user {user_id!r} already decided approval {approval.id}")
    entry = {"from": user_id, "to": to_user, "at": datetime.now(UTC).isoformat()}
    approval.delegations = [*approval.delegations, {**entry, "comment": comment}]
    _tell_delegate(session, approval, user_id, to_user)
    session.flush()
    return approval


def _tell_delegate(session: Session, approval: Approval, by: str, to_user: str) -> None:
    label = approval.name or f"step {approval.step_index + 1}"
    notifications.send(
        session,
        tenant_id=approval.tenant_id,
        recipients=[to_user],
        type=NotificationType.WORKFLOW_APPROVAL_REQUIRED,
        priority="high",
        title=(
            f"Approval delegated to you by {by}: {label} for "
            f"{approval.entity_type} {approval.entity_id}"
        ),
        message=(
            f"Decide with: gov-pipeline approvals approve|reject|request-changes {approval.id}"
        ),
        entity_type=approval.entity_type,
        entity_id=approval.entity_id,
        execution_id=approval.execution_id,
        action_run_id=None,
    )


def refuse_decision(row: ApprovalDecision, reason: str) -> None:
    """Record why a decision was not applied; nothing else changes."""
    row.outcome = DECISION_REFUSED
    row.reason = reason
    row.settled_at = datetime.now(UTC)


def _open_step(
    session: Session, tenant_id: str, approval_id: int | str, user_id: str
) -> tuple[Approval, WorkflowExecution]:
    """The approval step `user_id` may decide now, locked, and its waiting execution.

    Raises:
        NotFoundError: no such approval in this tenant.
        ConflictError: the step is not open, or its execution is not waiting for it.
        PermissionDeniedError: `user_id` is not a listed approver of the step.
    """
    approval = get_approval(session, tenant_id, approval_id)
    if approval.status == ApprovalStatus.WAITING:
        raise ConflictError(
            f"approval {approval.id} is not open yet: step {approval.step_index + 1} "
            "waits for the steps before it"
        )
    if approval.status != ApprovalStatus.PENDING:
        raise ConflictError(f"approval {approval.id} is already {approval.status}")
    execution = session.get(WorkflowExecution, approval.execution_id)
    if execution is None or execution.status != ExecutionStatus.AWAITING_APPROVAL:
        state = execution.status if execution else "missing"
        raise ConflictError(f"approval {approval.id}: its execution is {state}")
    if not may_decide(session, approval, user_id):
        raise PermissionDeniedError(
            f"user {user_id!r} may not decide approval {approval.id} (approvers: users "
            f"{approval.approver_users or '-'}, roles {approval.approver_roles or '-'})"
        )
    return approval, execution


def list_approvals(
    session: Session,
    tenant_id: str,
    *,
    user_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[Approval]:
    """Approvals of a tenant; with `user_id`, the open ones that user may decide.

    Raises:
        NotFoundError: unknown tenant, or `user_id` is not one of the tenant's users (an
            empty inbox would hide a misspelt name).
    """
    require_tenant(session, tenant_id)
    if user_id is not None and session.get(User, (tenant_id, user_id)) is None:
        raise NotFoundError("user", user_id, tenant_id)
    query = select(Approval).where(Approval.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Approval.status == status)
    rows = list(
        session.scalars(query.order_by(Approval.id.desc()).limit(limit if not user_id else 10_000))
    )
    if user_id is not None:
        roles = roles_of(session, tenant_id, user_id)
        rows = [a for a in rows if a.status == ApprovalStatus.PENDING and _may(a, user_id, roles)][
            :limit
        ]
    return rows
