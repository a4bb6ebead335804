"""Approval decisions: only a listed approver decides an open step, and each decision is
recorded as an `approval_decided` change so that continuation runs like any other change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gov_pipeline.db.engine import is_postgres
from gov_pipeline.db.models import Approval, EntityChange, User, WorkflowExecution
from gov_pipeline.domain.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from gov_pipeline.domain.statuses import (
    ApprovalStatus,
    ChangeKind,
    ExecutionStatus,
    NotificationType,
)
from gov_pipeline.domain.storable import check_storable
from gov_pipeline.services import notifications, policies
from gov_pipeline.services.tenants import check_identifier, require_tenant, roles_of

DECISIONS = {
    "approve": ApprovalStatus.APPROVED,
    "reject": ApprovalStatus.REJECTED,
    "request_changes": ApprovalStatus.CHANGES_REQUESTED,
}
SIGNATURE_TYPES = ("drawn", "uploaded", "typed")
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


def may_decide(session: Session, approval: Approval, user_id: str) -> bool:
    if user_id in approval.approver_users:
        return True
    return bool(roles_of(session, approval.tenant_id, user_id) & set(approval.approver_roles))


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
    """Record a decision on an open approval step and the `approval_decided` change.

    Args:
        decision: `approve`, `reject` or `request_changes`.

    Returns:
        The change row; the engine continues the flow when it processes it.

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
    approval, execution = _open_step(session, tenant_id, approval_id, user_id)
    # Lock the entity first: its changes must get ids in commit order.
    policies.get_policy(
        session,
        tenant_id=tenant_id,
        policy_id=approval.entity_id,
        include_deleted=True,
        for_update=True,
    )
    status = DECISIONS[decision]
    approval.status = status
    approval.decided_by = user_id
    approval.decided_at = datetime.now(UTC)
    approval.comment = comment
    approval.signature = _signature(signature)
    change = _decision_change(approval, execution, status, decision, user_id)
    session.add(change)
    session.flush()
    return change


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


def _decision_change(
    approval: Approval,
    execution: WorkflowExecution,
    status: ApprovalStatus,
    decision: str,
    user_id: str,
) -> EntityChange:
    """The `approval_decided` change recording `user_id`'s decision on `approval`."""
    # The values are plain strings, as read back: they become condition facts (`old`, `new`).
    return EntityChange(
        tenant_id=approval.tenant_id,
        entity_type=approval.entity_type,
        entity_id=approval.entity_id,
        kind=ChangeKind.APPROVAL_DECIDED,
        old_values={"approval_status": ApprovalStatus.PENDING.value},
        new_values={
            "approval_id": approval.id,
            "execution_id": approval.execution_id,
            "step_index": approval.step_index,
            "approval_status": status.value,
            "decision": decision,
            "decided_by": user_id,
        },
        changed_fields=["approval_status"],
        actor=user_id,
        caused_by_execution_id=approval.execution_id,
        chain_depth=execution.chain_depth,
    )


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
        rows = [
            a
            for a in rows
            if a.status == ApprovalStatus.PENDING
            and (user_id in a.approver_users or roles & set(a.approver_roles))
        ][:limit]
    return rows
