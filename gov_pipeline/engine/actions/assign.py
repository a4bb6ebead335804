"""`assign`: set the entity's owner (a captured change; a task's owner is its assignee) or
the execution's assignee."""

from __future__ import annotations

from typing import Any

from gov_pipeline.db.bulk import update_later
from gov_pipeline.domain.definitions import AssignAction
from gov_pipeline.domain.entities import kind_of
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.engine.actions.base import ActionContext
from gov_pipeline.services import records


def assign(ctx: ActionContext, action: AssignAction) -> dict[str, Any]:
    if action.target == "assignee":
        previous = ctx.execution.assignee_id
        update_later(ctx.session, ctx.execution, {"assignee_id": action.user})
        return {"target": "assignee", "from": previous, "to": action.user}
    if ctx.entity is None:
        raise InvalidInputError("entity", "assign to owner needs an entity")
    previous = records.owner_of(ctx.entity)
    records.update_record(
        ctx.session,
        ctx.execution.entity_type,
        tenant_id=ctx.execution.tenant_id,
        record_id=ctx.entity.id,
        fields={kind_of(ctx.execution.entity_type).owner_field: action.user},
        actor=ctx.writer(),
    )
    return {"target": "owner", "from": previous, "to": action.user}
