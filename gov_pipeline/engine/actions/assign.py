"""`assign`: set the policy owner (a captured change) or the execution's assignee."""

from __future__ import annotations

from typing import Any

from gov_pipeline.domain.definitions import AssignAction
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.engine.actions.base import ActionContext
from gov_pipeline.services import policies


def assign(ctx: ActionContext, action: AssignAction) -> dict[str, Any]:
    if action.target == "assignee":
        previous = ctx.execution.assignee_id
        ctx.execution.assignee_id = action.user
        return {"target": "assignee", "from": previous, "to": action.user}
    if ctx.entity is None:
        raise InvalidInputError("entity", "assign to owner needs an entity")
    previous = ctx.entity.owner_id
    policies.update_policy(
        ctx.session,
        tenant_id=ctx.execution.tenant_id,
        policy_id=ctx.entity.id,
        fields={"owner_id": action.user},
        actor=policies.Actor(ctx.actor, ctx.execution.id, ctx.execution.chain_depth + 1),
    )
    return {"target": "owner", "from": previous, "to": action.user}
