"""Policy use cases: the record use cases (services/records.py) for policies, under the
names their callers use."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy.orm import Session

from gov_pipeline.db.models import Policy
from gov_pipeline.domain.statuses import EntityType
from gov_pipeline.services import records
from gov_pipeline.services.records import MAX_PAGE_SIZE, Actor, RecordPage

__all__ = [
    "MAX_PAGE_SIZE", "Actor", "PolicyPage", "create_policy", "get_policy", "list_policies",
    "policy_to_dict", "soft_delete_policy", "transition_status", "update_policy",
]  # fmt: skip

POLICY = EntityType.POLICY
PolicyPage = RecordPage


def get_policy(
    session: Session,
    *,
    tenant_id: str,
    policy_id: int | str,
    include_deleted: bool = False,
    for_update: bool = False,
) -> Policy:
    """The policy `policy_id` of `tenant_id` (see `records.get_record`)."""
    return cast(
        Policy,
        records.get_record(
            session, POLICY, tenant_id=tenant_id, record_id=policy_id,
            include_deleted=include_deleted, for_update=for_update,
        ),
    )  # fmt: skip


def create_policy(
    session: Session,
    *,
    tenant_id: str,
    fields: dict[str, Any],
    actor: Actor | None = None,
    importing: bool = False,
) -> Policy:
    """Create a policy, as `draft` (see `records.create_record`)."""
    return cast(
        Policy,
        records.create_record(
            session, POLICY, tenant_id=tenant_id, fields=fields, actor=actor,
            importing=importing,
        ),
    )  # fmt: skip


def update_policy(
    session: Session,
    *,
    tenant_id: str,
    policy_id: int | str,
    fields: dict[str, Any],
    actor: Actor | None = None,
) -> Policy:
    """Change editable fields (see `records.update_record`)."""
    return cast(
        Policy,
        records.update_record(
            session, POLICY, tenant_id=tenant_id, record_id=policy_id, fields=fields,
            actor=actor,
        ),
    )  # fmt: skip


def transition_status(
    session: Session,
    *,
    tenant_id: str,
    policy_id: int | str,
    to_status: str,
    actor: Actor | None = None,
) -> Policy:
    """Move a policy through its lifecycle (see `records.transition_record`)."""
    return cast(
        Policy,
        records.transition_record(
            session, POLICY, tenant_id=tenant_id, record_id=policy_id, to_status=to_status,
            actor=actor,
        ),
    )  # fmt: skip


def soft_delete_policy(
    session: Session, *, tenant_id: str, policy_id: int | str, actor: Actor | None = None
) -> Policy:
    """Mark a policy deleted (see `records.soft_delete_record`)."""
    return cast(
        Policy,
        records.soft_delete_record(
            session, POLICY, tenant_id=tenant_id, record_id=policy_id, actor=actor
        ),
    )


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
) -> RecordPage:
    """One page of the tenant's policies, newest id last (see `records.list_records`)."""
    equal = {k: v for k, v in (("policy_type", policy_type), ("owner_id", owner_id)) if v}
    return records.list_records(
        session, POLICY, tenant_id=tenant_id, status=status, equal=equal, limit=limit,
        offset=offset, include_deleted=include_deleted,
    )  # fmt: skip


def policy_to_dict(policy: Policy, *, include_content: bool = True) -> dict[str, Any]:
    """A JSON-ready view of a policy (dates as ISO strings)."""
    return records.record_to_dict(policy, include_content=include_content)
