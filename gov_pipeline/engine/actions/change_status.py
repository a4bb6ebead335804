"""`change_status`: move the entity through the lifecycle; the move is itself a change."""

from __future__ import annotations

from typing import Any

from gov_pipeline.domain.definitions import ChangeStatusAction
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.engine.actions.base import ActionContext
from gov_pipeline.services import policies


def change_status(ctx: ActionContext, action: ChangeStatusAction) -> dict[str, Any]:
    if ctx.entity is None:
        raise InvalidInputError("entity", "change_status needs an entity")
    before = ctx.entity.status
    policies.transition_status(
        ctx.session,
        tenant_id=ctx.execution.tenant_id,
        policy_id=ctx.entity.id,
        to_status=action.to,
        # The resulting change records this execution and one more level of chaining.
        actor=policies.Actor(ctx.actor, ctx.execution.id, ctx.execution.chain_depth + 1),
    )
    return {"from": before, "to": action.to}
