"""`change_status`: move the entity through its lifecycle; the move is itself a change."""

from __future__ import annotations

from typing import Any

from gov_pipeline.domain.definitions import ChangeStatusAction
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.engine.actions.base import ActionContext
from gov_pipeline.services import records


def change_status(ctx: ActionContext, action: ChangeStatusAction) -> dict[str, Any]:
    if ctx.entity is None:
        raise InvalidInputError("entity", "change_status needs an entity")
    before = ctx.entity.status
    records.transition_record(
        ctx.session,
        ctx.execution.entity_type,
        tenant_id=ctx.execution.tenant_id,
        record_id=ctx.entity.id,
        to_status=action.to,
        actor=ctx.writer(),
    )
    return {"from": before, "to": action.to}
