"""What a workflow would do for an entity, without writing anything."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from gov_pipeline.db.models import EntityChange
from gov_pipeline.domain.definitions import RequestApprovalAction, WorkflowDefinition
from gov_pipeline.domain.entities import kind_of
from gov_pipeline.domain.errors import NotFoundError
from gov_pipeline.domain.statuses import WorkflowStatus
from gov_pipeline.domain.triggers import TRIGGERS_BY_KIND
from gov_pipeline.engine.facts import build_facts, entity_facts
from gov_pipeline.services.entities import load_entity


def _plan(actions: list[Any]) -> list[dict[str, Any]]:
    planned = []
    for index, action in enumerate(actions):
        entry = {
            "step": action.id or str(index),
            **action.model_dump(mode="json", exclude_none=True),
        }
        if isinstance(action, RequestApprovalAction):
            entry["note"] = "the execution waits here for the approvers"
        planned.append(entry)
    return planned


def dry_run(
    session: Session,
    definition: WorkflowDefinition,
    *,
    entity_id: int | str,
    trigger: str | None = None,
    change_id: int | None = None,
) -> dict[str, Any]:
    """Would `definition` match, which conditions fail, and what would it do — writes nothing.

    Without `change_id` the record `entity_id` (of the definition's entity type) is taken
    as if it had just arrived in its current state
    (every field changed, nothing before). With `change_id` that real change is used.

    Raises:
        NotFoundError: unknown record or change in the definition's tenant.
    """
    tenant = definition.tenant_id
    entity = load_entity(session, tenant, definition.entity_type, str(entity_id))
    if entity is None:
        shown = int(entity_id) if str(entity_id).isdigit() else entity_id  # as `policies show`
        raise NotFoundError(kind_of(definition.entity_type).noun, shown, tenant)
    if change_id is not None:
        change = session.get(EntityChange, change_id)
        if (
            change is None
            or change.tenant_id != tenant
            or change.entity_type != definition.entity_type
            or change.entity_id != str(entity.id)
        ):
            raise NotFoundError("change", change_id, tenant)
    else:
        facts_entity = entity_facts(entity)
        change = EntityChange(
            id=0, kind="created", old_values={}, new_values=facts_entity,
            changed_fields=sorted(facts_entity), actor=None, chain_depth=0,
        )  # fmt: skip
    # A plain str in the facts: a failed condition quotes it by repr.
    wanted = trigger or definition.trigger.value
    facts = build_facts(change, entity, wanted)
    condition = definition.compiled_conditions()
    matched = condition.evaluate(facts)
    fires = TRIGGERS_BY_KIND.get(change.kind, ()) if change_id is not None else (wanted,)
    trigger_ok = definition.trigger in fires and wanted == definition.trigger
    return {
        "workflow": definition.name,
        "tenant_id": tenant,
        "entity_type": str(definition.entity_type),
        "entity_id": entity.id,
        "trigger": wanted,
        "trigger_matches": trigger_ok,
        "conditions_met": matched,
        "would_run": matched and trigger_ok and definition.status == WorkflowStatus.ACTIVE,
        "failed_conditions": [] if matched else condition.explain(facts),
        "actions": _plan(list(definition.actions)),
        "status": definition.status,
    }
