"""Reading the governed entity a change or an execution is about (flush only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from gov_pipeline.db.models import ENTITY_MODELS, EntityChange, Record
from gov_pipeline.domain.statuses import EntityType


def _model(entity_type: str) -> type[Record] | None:
    try:
        return ENTITY_MODELS[EntityType(entity_type)]
    except ValueError:
        return None


def load_entity(
    session: Session, tenant_id: str, entity_type: str, entity_id: str
) -> Record | None:
    model = _model(entity_type)
    if model is None or not entity_id.isdigit():
        return None
    # By primary key: an entity this transaction already loaded costs no query.
    record = cast(Record | None, session.get(model, int(entity_id)))
    return record if record is not None and record.tenant_id == tenant_id else None


def load_entities(
    session: Session, changes: Sequence[EntityChange]
) -> dict[tuple[str, str, str], Record]:
    """The entities of `changes`, one query per (tenant, entity type), keyed by (tenant,
    type, id)."""
    wanted: dict[tuple[str, str], set[int]] = {}
    for change in changes:
        if _model(change.entity_type) is not None and change.entity_id.isdigit():
            key = (change.tenant_id, change.entity_type)
            wanted.setdefault(key, set()).add(int(change.entity_id))
    found: dict[tuple[str, str, str], Record] = {}
    for (tenant_id, entity_type), ids in wanted.items():
        model = ENTITY_MODELS[EntityType(entity_type)]
        rows = session.scalars(
            select(model).where(model.tenant_id == tenant_id, model.id.in_(sorted(ids)))
        )
        for record in cast("list[Record]", list(rows)):
            found[(tenant_id, entity_type, str(record.id))] = record
    return found
