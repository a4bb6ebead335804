"""Completing a review of a record (a policy, an SOP, a risk): one row in `reviews`, as any
other writer inserts it. The database checks the record and schedules its next review
(db/reviews.py); this service names the refusals as the other services do."""

from __future__ import annotations

from datetime import date

from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gov_pipeline.db.models import ENTITY_MODELS, Review
from gov_pipeline.db.reviews import review_refusal
from gov_pipeline.domain.entities import EntityKind, kind_of
from gov_pipeline.domain.errors import (
    ConflictError,
    GovPipelineError,
    InvalidInputError,
    NotFoundError,
)
from gov_pipeline.domain.reviews import NEXT_REVIEW_FIELD, reviewed_kinds
from gov_pipeline.services.records import parse_record_id
from gov_pipeline.services.tenants import check_identifier, require_tenant


def complete_review(
    session: Session,
    *,
    tenant_id: str,
    entity_type: str,
    entity_id: int | str,
    reviewed_by: str,
    notes: str | None = None,
) -> date | None:
    """Record that `reviewed_by` reviewed the record today; the database moves its
    `next_review_date` to today + its `review_frequency` (a change of the reviewer's).

    Returns:
        The record's next review date; None when its frequency is `as_needed` or not set
        (no next review is scheduled).

    Raises:
        InvalidInputError: an unknown entity type or one without a review cycle, not an
            id, or a malformed reviewer.
        NotFoundError: an unknown tenant, no such record in the tenant, or a deleted one.
        ConflictError: the record's status is not one a review is completed in (a draft
            policy, a closed risk). Nothing is written.
    """
    kind = kind_of(entity_type)
    if not kind.reviewable:
        known = ", ".join(str(k.entity_type) for k in reviewed_kinds())
        raise InvalidInputError(
            "entity_type", f"a {kind.noun} has no review cycle (one of: {known})"
        )
    record_id = parse_record_id(kind, entity_id)
    check_identifier("reviewed_by", reviewed_by)
    require_tenant(session, tenant_id)
    row = insert(Review).values(
        tenant_id=tenant_id, entity_type=str(kind.entity_type), entity_id=record_id,
        reviewed_by=reviewed_by, notes=notes or "",
    )  # fmt: skip
    connection = session.connection()
    try:
        # A refusal undoes the insert only: the caller's transaction stays usable. (A
        # connection's savepoint: the session's would end SQLite's capture context.)
        with connection.begin_nested():
            review_id = connection.execute(row.returning(Review.id)).scalar_one()
    except DBAPIError as exc:
        refused = _refused(exc, kind, record_id, tenant_id)
        if refused is None:
            raise
        raise refused from None
    _read_schedule_back(session, kind, record_id)
    # Read after the insert: SQLite's RETURNING does not see what its triggers set.
    return session.scalar(select(Review.next_review_date).where(Review.id == review_id))


def _refused(
    exc: DBAPIError, kind: EntityKind, record_id: int, tenant_id: str
) -> GovPipelineError | None:
    """The service's error for the database's refusal; None: the error is not one."""
    refusal = review_refusal(str(exc.orig))
    if refusal is None:
        return None
    if refusal.reason in ("not_found", "deleted"):
        return NotFoundError(kind.noun, record_id, tenant_id)
    if refusal.reason == "status":
        return ConflictError(f"{kind.noun} {record_id} is {refusal.status}: {refusal.rule}")
    return InvalidInputError("review", str(exc.orig).splitlines()[0])


def _read_schedule_back(session: Session, kind: EntityKind, record_id: int) -> None:
    # The database moved the record's next review; a copy the session holds is stale.
    model = ENTITY_MODELS[kind.entity_type]
    held = session.identity_map.get(session.identity_key(model, record_id))
    if held is not None:
        session.refresh(held, [NEXT_REVIEW_FIELD, "updated_by", "updated_at"])
