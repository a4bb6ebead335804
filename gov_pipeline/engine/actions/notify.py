"""`notify`: in-app notifications to users, role holders and/or the entity owner."""

from __future__ import annotations

from typing import Any

from gov_pipeline.domain.definitions import NotifyAction
from gov_pipeline.engine.actions.base import ActionContext
from gov_pipeline.services import notifications, records


def notify(ctx: ActionContext, action: NotifyAction) -> dict[str, Any]:
    owner = records.owner_of(ctx.entity) if (action.include_owner and ctx.entity) else None
    recipients = notifications.resolve_recipients(
        ctx.session,
        ctx.execution.tenant_id,
        users=action.users,
        roles=action.roles,
        owner_id=owner,
    )
    ids = notifications.send(
        ctx.session,
        tenant_id=ctx.execution.tenant_id,
        recipients=recipients,
        type=action.notification_type,
        priority=action.priority,
        title=ctx.render(action.title),
        message=ctx.render(action.message),
        entity_type=ctx.execution.entity_type,
        entity_id=ctx.execution.entity_id,
        execution_id=ctx.execution.id,
        action_run_id=ctx.action_run.id,
    )
    return {"recipients": recipients, "notifications": len(ids)}
