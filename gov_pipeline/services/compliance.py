"""What the compliance report is computed from (domain/compliance.py), read over a session
the caller owns: live policies by status, the records whose review date has passed, and the
approval steps decided or open with a due time; of one tenant, or of all."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from gov_pipeline.db.models import Approval, Policy, Risk, Sop
from gov_pipeline.domain.compliance import (
    DECIDED_APPROVAL_STATUSES,
    REVIEW_CLOSED,
    ApprovalTimes,
    ComplianceFacts,
    ReviewDue,
)
from gov_pipeline.domain.statuses import OPEN_APPROVAL_STATUSES, EntityType

REVIEWED: tuple[tuple[EntityType, type[Policy] | type[Sop] | type[Risk]], ...] = (
    (EntityType.POLICY, Policy),
    (EntityType.SOP, Sop),
    (EntityType.RISK, Risk),
)


def _of(model: Any, tenant_id: str | None) -> list[Any]:
    return [] if tenant_id is None else [model.tenant_id == tenant_id]


def _reviews(session: Session, tenant_id: str | None, today: date) -> list[ReviewDue]:
    found = []
    for entity_type, model in REVIEWED:
        rows = session.execute(
            select(model.tenant_id, model.id, model.title, model.status, model.next_review_date)
            .where(
                model.deleted_at.is_(None),
                model.next_review_date < today,
                model.status.not_in(REVIEW_CLOSED[entity_type]),
                *_of(model, tenant_id),
            )
            .order_by(model.next_review_date, model.id)
        )
        found += [
            ReviewDue(str(t), str(entity_type), int(i), str(title), str(s), d)
            for t, i, title, s, d in rows
            if d is not None
        ]
    return found


def _approvals(session: Session, tenant_id: str | None) -> list[ApprovalTimes]:
    decided = and_(Approval.status.in_(DECIDED_APPROVAL_STATUSES), Approval.decided_at.is_not(None))
    open_with_due = and_(Approval.status.in_(OPEN_APPROVAL_STATUSES), Approval.due_at.is_not(None))
    rows = session.execute(
        select(
            Approval.tenant_id, Approval.id, Approval.status, Approval.requested_at,
            Approval.created_at, Approval.decided_at, Approval.due_at,
        )
        .where(or_(decided, open_with_due), *_of(Approval, tenant_id))
        .order_by(Approval.id)
    )  # fmt: skip
    return [
        ApprovalTimes(str(t), int(i), str(s), requested or created, decided_at, due)
        for t, i, s, requested, created, decided_at, due in rows
    ]


def read_facts(session: Session, *, tenant_id: str | None, today: date) -> ComplianceFacts:
    """The facts of `tenant_id` (None: every tenant); reviews due before `today`."""
    counts = session.execute(
        select(Policy.tenant_id, Policy.status, func.count())
        .where(Policy.deleted_at.is_(None), *_of(Policy, tenant_id))
        .group_by(Policy.tenant_id, Policy.status)
        .order_by(Policy.tenant_id, Policy.status)
    )
    return ComplianceFacts(
        policy_counts=[(str(t), str(s), int(n)) for t, s, n in counts],
        reviews=_reviews(session, tenant_id, today),
        approvals=_approvals(session, tenant_id),
    )
