"""Use cases of every governed entity type (a record): create, update, move through the
lifecycle, soft delete, get, list.

Every write goes through the capture triggers, so each one leaves exactly one change row;
the caller owns the transaction, so a refused write leaves none. What differs between
entity types (fields, lifecycle, stamps) comes from `domain/entities.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gov_pipeline.db.capture import set_change_context
from gov_pipeline.db.engine import is_postgres
from gov_pipeline.db.models import ENTITY_MODELS, Policy, Record, row_to_dict
from gov_pipeline.domain.entities import POLICY_REFERENCES, EntityKind, kind_of
from gov_pipeline.domain.errors import InvalidInputError, NotFoundError
from gov_pipeline.domain.record_fields import validate_fields
from gov_pipeline.domain.reviews import dated_on_entering
from gov_pipeline.domain.statuses import EntityType
from gov_pipeline.services.tenants import check_identifier, require_tenant

MAX_PAGE_SIZE = 1000


# Fields that name a policy of the same tenant.
@dataclass(frozen=True)
class Actor:
    """Who writes, and, for writes made by a workflow action, which execution and depth."""

    user_id: str | None = None
    execution_id: int | None = None
    chain_depth: int = 0


def write_as(session: Session, actor: Actor | None, *, importing: bool = False) -> Actor:
    actor = actor or Actor()
    set_change_context(
        session,
        actor=actor.user_id,
        execution_id=actor.execution_id,
        chain_depth=actor.chain_depth,
        importing=importing,
    )
    return actor


def parse_record_id(kind: EntityKind, value: object) -> int:
    """The id `value` names.

    Raises:
        InvalidInputError: not a positive integer.
    """
    noun = str(kind.entity_type)
    if isinstance(value, bool):
        raise InvalidInputError(noun, f"not a {kind.noun} id: {value!r}")
    try:
        parsed = int(str(value))
    except ValueError:
        raise InvalidInputError(noun, f"not a {kind.noun} id: {str(value)[:40]!r}") from None
    if parsed < 1:
        raise InvalidInputError(noun, f"not a {kind.noun} id: {parsed}")
    return parsed


def get_record(
    session: Session,
    entity_type: str,
    *,
    tenant_id: str,
    record_id: int | str,
    include_deleted: bool = False,
    for_update: bool = False,
) -> Record:
    """The `entity_type` record `record_id` of `tenant_id`.

    Raises:
        InvalidInputError: unknown entity type, or not an id.
        NotFoundError: no such record in this tenant (or soft-deleted, unless asked for).
    """
    kind = kind_of(entity_type)
    rid = parse_record_id(kind, record_id)
    check_identifier("tenant", tenant_id)
    model = ENTITY_MODELS[kind.entity_type]
    query = select(model).where(model.id == rid, model.tenant_id == tenant_id)
    if for_update and is_postgres(session):
        query = query.with_for_update()
    record = cast(Record | None, session.scalars(query).one_or_none())
    if record is None or (record.deleted_at is not None and not include_deleted):
        raise NotFoundError(kind.noun, rid, tenant_id)
    return record


def _check_references(session: Session, tenant_id: str, values: dict[str, Any]) -> None:
    """A policy named by the fields must be a live policy of the same tenant."""
    for name in POLICY_REFERENCES:
        if values.get(name) is None:
            continue
        policy = session.get(Policy, values[name])
        if policy is None or policy.tenant_id != tenant_id or policy.deleted_at is not None:
            raise InvalidInputError(name, f"no policy {values[name]} in tenant {tenant_id!r}")


def create_record(
    session: Session,
    entity_type: str,
    *,
    tenant_id: str,
    fields: dict[str, Any],
    actor: Actor | None = None,
    importing: bool = False,
) -> Record:
    """Create a record, in its lifecycle's initial status.

    Args:
        importing: an import of existing records: `fields["status"]` may give any status
            of the lifecycle (the database allows it for this transaction only).

    Raises:
        InvalidInputError: missing or malformed fields, a policy reference of another
            tenant, or a status other than the initial one outside an import.
        NotFoundError: unknown tenant.
    """
    kind = kind_of(entity_type)
    require_tenant(session, tenant_id)
    values = validate_fields(kind.entity_type, fields, creating=True)
    _check_references(session, tenant_id, values)
    lifecycle = kind.lifecycle
    status = lifecycle.parse(str(fields.get("status") or lifecycle.initial))
    if status != lifecycle.initial and not importing:
        raise InvalidInputError(
            "status",
            f"a new {kind.noun} starts as {lifecycle.initial}, not {status}: move it with "
            f"set-status, or load existing ones with `{kind.command} import`",
        )
    actor = write_as(session, actor, importing=importing)
    record = ENTITY_MODELS[kind.entity_type](
        tenant_id=tenant_id,
        status=str(status),  # a plain str, as read back: it becomes condition facts
        created_by=actor.user_id,
        updated_by=actor.user_id,
        **values,
    )
    session.add(record)
    session.flush()
    _read_dates_back(session, kind, record)
    return record


def update_record(
    session: Session,
    entity_type: str,
    *,
    tenant_id: str,
    record_id: int | str,
    fields: dict[str, Any],
    actor: Actor | None = None,
) -> Record:
    """Change editable fields (not the status: use `transition_record`).

    Raises:
        InvalidInputError: nothing to change, or an unknown, read-only or malformed field.
        NotFoundError: no such record.
    """
    kind = kind_of(entity_type)
    if not fields:
        raise InvalidInputError("fields", "nothing to update")
    if "status" in fields:
        raise InvalidInputError(
            "status", f"use set-status to move a {kind.noun} through its lifecycle"
        )
    values = validate_fields(kind.entity_type, fields, creating=False)
    _check_references(session, tenant_id, values)
    record = get_record(
        session, kind.entity_type, tenant_id=tenant_id, record_id=record_id, for_update=True
    )
    actor = write_as(session, actor)
    for name, value in values.items():
        setattr(record, name, value)
    record.updated_by = actor.user_id
    session.flush()
    return record


def transition_record(
    session: Session,
    entity_type: str,
    *,
    tenant_id: str,
    record_id: int | str,
    to_status: str,
    actor: Actor | None = None,
) -> Record:
    """Move a record to `to_status` through its lifecycle.

    Raises:
        IllegalTransitionError: the lifecycle does not allow the move (names both statuses).
        InvalidInputError: unknown status.
        NotFoundError: no such record.
    """
    kind = kind_of(entity_type)
    target = kind.lifecycle.parse(to_status)
    # The row lock serialises writers of one record, which makes id order commit order.
    record = get_record(
        session, kind.entity_type, tenant_id=tenant_id, record_id=record_id, for_update=True
    )
    kind.lifecycle.check(record.status, target)
    actor = write_as(session, actor)
    record.status = str(target)  # a plain str, as read back: it becomes condition facts
    record.updated_by = actor.user_id
    session.flush()
    _read_dates_back(session, kind, record)
    return record


def _read_dates_back(session: Session, kind: EntityKind, record: Record) -> None:
    # Entering a status may date the record (a publication: published_date and the next
    # review), which the database does for every writer (db/reviews.py).
    dated = dated_on_entering(kind, record.status)
    if dated:
        session.refresh(record, list(dated))


def soft_delete_record(
    session: Session,
    entity_type: str,
    *,
    tenant_id: str,
    record_id: int | str,
    actor: Actor | None = None,
) -> Record:
    """Mark a record deleted (captured as a `deleted` change).

    Raises:
        NotFoundError: no such record, or already deleted.
    """
    record = get_record(
        session, entity_type, tenant_id=tenant_id, record_id=record_id, for_update=True
    )
    actor = write_as(session, actor)
    record.deleted_at = datetime.now(UTC)
    record.updated_by = actor.user_id
    session.flush()
    return record


@dataclass(frozen=True)
class RecordPage:
    items: list[Record]
    total: int
    limit: int
    offset: int


def list_records(
    session: Session,
    entity_type: str,
    *,
    tenant_id: str,
    status: str | None = None,
    equal: dict[str, str] | None = None,
    limit: int = 50,
    offset: int = 0,
    include_deleted: bool = False,
) -> RecordPage:
    """One page of the tenant's records of `entity_type`, newest id last.

    Args:
        equal: column -> value filters (owner_id, policy_type, category, ...).

    Raises:
        InvalidInputError: bad status filter, unknown filter column or paging values.
        NotFoundError: unknown tenant.
    """
    kind = kind_of(entity_type)
    require_tenant(session, tenant_id)
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInputError("limit", f"must be between 1 and {MAX_PAGE_SIZE}")
    if offset < 0:
        raise InvalidInputError("offset", "must be >= 0")
    model = ENTITY_MODELS[kind.entity_type]
    query = select(model).where(model.tenant_id == tenant_id)
    if status is not None:
        query = query.where(model.status == kind.lifecycle.parse(status))
    for column, value in (equal or {}).items():
        if column not in kind.columns or column in kind.containers:
            raise InvalidInputError(column, f"not a filterable field of a {kind.noun}")
        query = query.where(getattr(model, column) == value)
    if not include_deleted:
        query = query.where(model.deleted_at.is_(None))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = cast(
        "list[Record]", list(session.scalars(query.order_by(model.id).limit(limit).offset(offset)))
    )
    return RecordPage(items=items, total=int(total), limit=limit, offset=offset)


def record_to_dict(record: Record, *, include_content: bool = True) -> dict[str, Any]:
    """A JSON-ready view of a record (dates as ISO strings)."""
    return row_to_dict(record, frozenset() if include_content else frozenset({"content"}))


def owner_of(record: Record) -> str | None:
    """Who owns the record (a task: its assignee)."""
    owner = getattr(record, kind_of(entity_type_of(record)).owner_field)
    return None if owner is None else str(owner)


def entity_type_of(record: Record) -> EntityType:
    for entity_type, model in ENTITY_MODELS.items():
        if isinstance(record, model):
            return entity_type
    raise TypeError(f"not a governed record: {type(record).__name__}")
