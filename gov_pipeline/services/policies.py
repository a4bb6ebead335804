"""Policy use cases: create, update, move through the lifecycle, soft delete, get, list.

Every write goes through the capture triggers, so each one leaves exactly one change row;
the caller owns the transaction, so a refused write leaves none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gov_pipeline.db.capture import set_change_context
from gov_pipeline.db.engine import is_postgres
from gov_pipeline.db.models import Policy, row_to_dict
from gov_pipeline.domain.errors import InvalidInputError, NotFoundError
from gov_pipeline.domain.lifecycle import POLICY_LIFECYCLE, check_transition, parse_status
from gov_pipeline.domain.policy_fields import validate_policy_fields
from gov_pipeline.domain.statuses import PolicyStatus
from gov_pipeline.services.tenants import check_identifier, require_tenant

MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Actor:
    """Who writes, and, for writes made by a workflow action, which execution and depth."""

    user_id: str | None = None
    execution_id: int | None = None
    chain_depth: int = 0


def _context(session: Session, actor: Actor | None, *, importing: bool = False) -> Actor:
    actor = actor or Actor()
    set_change_context(
        session,
        actor=actor.user_id,
        execution_id=actor.execution_id,
        chain_depth=actor.chain_depth,
        importing=importing,
    )
    return actor


def _policy_id(policy_id: object) -> int:
    if isinstance(policy_id, bool):
        raise InvalidInputError("policy", f"not a policy id: {policy_id!r}")
    try:
        value = int(str(policy_id))
    except ValueError:
        raise InvalidInputError("policy", f"not a policy id: {str(policy_id)[:40]!r}") from None
    if value < 1:
        raise InvalidInputError("policy", f"not a policy id: {value}")
    return value


def get_policy(
    session: Session,
    *,
    tenant_id: str,
    policy_id: int | str,
    include_deleted: bool = False,
    for_update: bool = False,
) -> Policy:
    """The policy `policy_id` of `tenant_id`.

    Raises:
        NotFoundError: no such policy in this tenant (or soft-deleted, unless asked for).
    """
    pid = _policy_id(policy_id)
    check_identifier("tenant", tenant_id)
    query = select(Policy).where(Policy.id == pid, Policy.tenant_id == tenant_id)
    if for_update and is_postgres(session):
        query = query.with_for_update()
    policy = session.scalars(query).one_or_none()
    if policy is None or (policy.deleted_at is not None and not include_deleted):
        raise NotFoundError("policy", pid, tenant_id)
    return policy


def create_policy(
    session: Session,
    *,
    tenant_id: str,
    fields: dict[str, Any],
    actor: Actor | None = None,
    importing: bool = False,
) -> Policy:
    """Create a policy, in its lifecycle's initial status (`draft`).

    Args:
        importing: an import of existing policies: `fields["status"]` may give any status
            of the lifecycle (the database allows it for this transaction only).

    Raises:
        InvalidInputError: missing or malformed fields, or a status other than the initial
            one outside an import.
        NotFoundError: unknown tenant.
    """
    require_tenant(session, tenant_id)
    values = validate_policy_fields(fields, creating=True)
    initial = POLICY_LIFECYCLE.initial
    status = parse_status(str(fields.get("status") or initial))
    if status != initial and not importing:
        raise InvalidInputError(
            "status",
            f"a new policy starts as {initial}, not {status}: move it with set-status "
            "(through review), or load existing policies with `policies import`",
        )
    actor = _context(session, actor, importing=importing)
    policy = Policy(
        tenant_id=tenant_id,
        status=status.value,  # a plain str, as read back: it becomes condition facts
        created_by=actor.user_id,
        updated_by=actor.user_id,
        published_date=date.today() if status is PolicyStatus.PUBLISHED else None,
        **values,
    )
    session.add(policy)
    session.flush()
    return policy


def update_policy(
    session: Session,
    *,
    tenant_id: str,
    policy_id: int | str,
    fields: dict[str, Any],
    actor: Actor | None = None,
) -> Policy:
    """Change editable fields (not the status: use `transition_status`).

    Raises:
        InvalidInputError: nothing to change, or an unknown, read-only or malformed field.
        NotFoundError: no such policy.
    """
    if not fields:
        raise InvalidInputError("fields", "nothing to update")
    if "status" in fields:
        raise InvalidInputError("status", "use set-status to move a policy through its lifecycle")
    values = validate_policy_fields(fields, creating=False)
    policy = get_policy(session, tenant_id=tenant_id, policy_id=policy_id, for_update=True)
    actor = _context(session, actor)
    for name, value in values.items():
        setattr(policy, name, value)
    policy.updated_by = actor.user_id
    session.flush()
    return policy


def transition_status(
    session: Session,
    *,
    tenant_id: str,
    policy_id: int | str,
    to_status: str,
    actor: Actor | None = None,
) -> Policy:
    """Move a policy to `to_status` through the lifecycle.

    Raises:
        IllegalTransitionError: the lifecycle does not allow the move (names both statuses).
        InvalidInputError: unknown status.
        NotFoundError: no such policy.
    """
    target = parse_status(to_status)
    # The row lock serialises writers of one policy, which makes id order commit order.
    policy = get_policy(session, tenant_id=tenant_id, policy_id=policy_id, for_update=True)
    check_transition(policy.status, target)
    actor = _context(session, actor)
    policy.status = target.value  # a plain str, as read back: it becomes condition facts
    policy.updated_by = actor.user_id
    if target is PolicyStatus.PUBLISHED:
        policy.published_date = date.today()
    session.flush()
    return policy


def soft_delete_policy(
    session: Session, *, tenant_id: str, policy_id: int | str, actor: Actor | None = None
) -> Policy:
    """Mark a policy deleted (captured as a `deleted` change).

    Raises:
        NotFoundError: no such policy, or already deleted.
    """
    policy = get_policy(session, tenant_id=tenant_id, policy_id=policy_id, for_update=True)
    actor = _context(session, actor)
    policy.deleted_at = datetime.now(UTC)
    policy.updated_by = actor.user_id
    session.flush()
    return policy


@dataclass(frozen=True)
class PolicyPage:
    items: list[Policy]
    total: int
    limit: int
    offset: int


def list_policies(
    session: Session,
    *,
    tenant_id: str,
    status: str | None = None,
    policy_type: str | None = None,
    owner_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
    include_deleted: bool = False,
) -> PolicyPage:
    """One page of the tenant's policies, newest id last.

    Raises:
        InvalidInputError: bad status filter or paging values.
        NotFoundError: unknown tenant.
    """
    require_tenant(session, tenant_id)
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInputError("limit", f"must be between 1 and {MAX_PAGE_SIZE}")
    if offset < 0:
        raise InvalidInputError("offset", "must be >= 0")
    query = select(Policy).where(Policy.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Policy.status == parse_status(status))
    if policy_type is not None:
        query = query.where(Policy.policy_type == policy_type)
    if owner_id is not None:
        query = query.where(Policy.owner_id == owner_id)
    if not include_deleted:
        query = query.where(Policy.deleted_at.is_(None))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = list(session.scalars(query.order_by(Policy.id).limit(limit).offset(offset)))
    return PolicyPage(items=items, total=int(total), limit=limit, offset=offset)


def policy_to_dict(policy: Policy, *, include_content: bool = True) -> dict[str, Any]:
    """A JSON-ready view of a policy (dates as ISO strings)."""
    return row_to_dict(policy, frozenset() if include_content else frozenset({"content"}))
