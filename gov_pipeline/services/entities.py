"""Reading the governed entity a change or an execution is about (flush only)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from gov_pipeline.db.models import EntityChange, Policy
from gov_pipeline.domain.statuses import EntityType


def load_entity(
    session: Session, tenant_id: str, entity_type: str, entity_id: str
) -> Policy | None:
    if entity_type != EntityType.POLICY or not entity_id.isdigit():
        return None
    # By primary key: an entity this transaction already loaded costs no query.
    policy = session.get(Policy, int(entity_id))
    return policy if policy is not None and policy.tenant_id == tenant_id else None


def load_entities(
    session: Session, changes: Sequence[EntityChange]
) -> dict[tuple[str, str, str], Policy]:
    """The entities of `changes`, one query per tenant, keyed by (tenant, type, id)."""
    wanted: dict[str, set[int]] = {}
    for change in changes:
        if change.entity_type == EntityType.POLICY and change.entity_id.isdigit():
            wanted.setdefault(change.tenant_id, set()).add(int(change.entity_id))
    found: dict[tuple[str, str, str], Policy] = {}
    for tenant_id, ids in wanted.items():
        rows = session.scalars(
            select(Policy).where(Policy.tenant_id == tenant_id, Policy.id.in_(sorted(ids)))
        )
        for policy in rows:
            found[(tenant_id, EntityType.POLICY, str(policy.id))] = policy
    return found
