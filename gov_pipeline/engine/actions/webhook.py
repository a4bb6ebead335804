"""`webhook`: queue an HTTP POST in the outbox (signed unless the action says `unsigned: true`);
it is sent after the execution commits."""

from __future__ import annotations

from typing import Any

from gov_pipeline.db.models import WebhookDelivery
from gov_pipeline.domain.definitions import WebhookAction
from gov_pipeline.domain.webhooks import check_url_allowed
from gov_pipeline.engine.actions.base import ActionContext
from gov_pipeline.services.webhooks import payload_for


def webhook(ctx: ActionContext, action: WebhookAction) -> dict[str, Any]:
    # Refused now, with the reason, rather than failing ten times later.
    host = check_url_allowed(action.url, ctx.settings.webhook_allowed_hosts)
    change = ctx.change
    event = {
        "tenant_id": ctx.execution.tenant_id,
        "workflow": {"name": ctx.workflow.name, "version": ctx.workflow.version},
        "execution_id": ctx.execution.id,
        "entity": {"type": ctx.execution.entity_type, "id": ctx.execution.entity_id},
        "change": None
        if change is None
        else {
            "id": change.id,
            "kind": change.kind,
            "changed_fields": change.changed_fields,
            "old": change.old_values,
            "new": change.new_values,
            "actor": change.actor,
        },
        "status": ctx.entity.status if ctx.entity is not None else None,
    }
    delivery = WebhookDelivery(
        tenant_id=ctx.execution.tenant_id,
        execution_id=ctx.execution.id,
        action_run_id=ctx.action_run.id,
        url=action.url,
        payload=payload_for(event),
        secret_env=action.secret_env,
        unsigned=action.unsigned,
        timeout_seconds=action.timeout_seconds,
        max_attempts=action.max_attempts,
    )
    ctx.session.add(delivery)
    ctx.session.flush()
    return {"delivery_id": delivery.id, "host": host}
