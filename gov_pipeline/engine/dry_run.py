"""What a workflow would do for an entity, without writing anything."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from gov_pipeline.config import Settings
from gov_pipeline.db.models import EntityChange, Record
from gov_pipeline.domain.definitions import RequestApprovalAction, WorkflowDefinition
from gov_pipeline.domain.entities import kind_of
from gov_pipeline.domain.errors import NotFoundError
from gov_pipeline.domain.statuses import Trigger, WorkflowStatus
from gov_pipeline.domain.triggers import TRIGGERS_BY_KIND
from gov_pipeline.engine.facts import build_facts, entity_facts, scheduled_facts
from gov_pipeline.engine.preflight import Preflight, Standing, problems
from gov_pipeline.services import records
from gov_pipeline.services.entities import load_entity

# The follow-up lists of request_approval; their steps run as `<list>.<id or index>`.
FOLLOW_UPS = ("on_approved", "on_rejected", "on_changes_requested")


def _plan(
    check: Preflight, standing: Standing, actions: Sequence[Any], prefix: str = ""
) -> list[dict[str, Any]]:
    """Each action with its step key and what it would fail on, checked in order from where
    the earlier ones leave the entity; request_approval's follow-up lists nested in it."""
    planned = []
    for index, action in enumerate(actions):
        entry = {
            "step": f"{prefix}{action.id or index}",
            **action.model_dump(mode="json", exclude_none=True),
        }
        found = problems(check, standing, action)
        entry.update({"check": "would fail", "would_fail": found} if found else {"check": "ok"})
        if isinstance(action, RequestApprovalAction):
            entry["note"] = "the execution waits here for the approvers"
            for name in FOLLOW_UPS:
                after = _standing_after(check, standing, name)
                entry[name] = _plan(check, after, getattr(action, name), f"{name}.")
        planned.append(entry)
    return planned


def _standing_after(check: Preflight, standing: Standing, outcome: str) -> Standing:
    """Where a follow-up list finds the entity: as the actions before the approval left it,
    and on changes requested sent back first (engine/continuation.py does that move)."""
    status = standing.status
    if outcome == "on_changes_requested":
        status = kind_of(check.entity_type).lifecycle.sent_back_from(status) or status
    return Standing(status, standing.owner)


def _change(
    session: Session, definition: WorkflowDefinition, entity: Record, change_id: int | None
) -> EntityChange:
    """The real change `change_id` of `entity`; without one, `entity` as if it had just
    arrived in its current state (every field changed, nothing before). Not added to the
    session.

    Raises:
        NotFoundError: no such change of that record in the definition's tenant.
    """
    tenant = definition.tenant_id
    if change_id is None:
        facts_entity = entity_facts(entity)
        return EntityChange(
            id=0, kind="created", old_values={}, new_values=facts_entity,
            changed_fields=sorted(facts_entity), actor=None, chain_depth=0,
        )  # fmt: skip
    change = session.get(EntityChange, change_id)
    if (
        change is None
        or change.tenant_id != tenant
        or change.entity_type != definition.entity_type
        or change.entity_id != str(entity.id)
    ):
        raise NotFoundError("change", change_id, tenant)
    return change


def _checked_plan(
    session: Session, settings: Settings, definition: WorkflowDefinition, entity: Record
) -> list[dict[str, Any]]:
    """The planned actions, each checked against the record as it stands now."""
    kind = kind_of(definition.entity_type)
    check = Preflight(
        session, settings, definition.tenant_id, str(definition.entity_type),
        f"{kind.noun} {entity.id}",
    )  # fmt: skip
    return _plan(check, Standing(entity.status, records.owner_of(entity)), definition.actions)


def dry_run(
    session: Session,
    definition: WorkflowDefinition,
    *,
    entity_id: int | str,
    settings: Settings,
    trigger: str | None = None,
    change_id: int | None = None,
) -> dict[str, Any]:
    """Would `definition` match, which conditions fail, and what would it do — writes nothing.

    Without `change_id` the record `entity_id` (of the definition's entity type) is taken
    as if it had just arrived in its current state
    (every field changed, nothing before). With `change_id` that real change is used.
    Each planned action, follow-up lists included, is checked (`check`, and `would_fail`
    with the reasons) as it would run on the record now, with `settings`: the process's that
    would run it. The checks run whether or not the workflow would.

    Raises:
        NotFoundError: unknown record or change in the definition's tenant.
    """
    tenant = definition.tenant_id
    entity = load_entity(session, tenant, definition.entity_type, str(entity_id))
    if entity is None:
        shown = int(entity_id) if str(entity_id).isdigit() else entity_id  # as `policies show`
        raise NotFoundError(kind_of(definition.entity_type).noun, shown, tenant)
    change = _change(session, definition, entity, change_id)
    # A plain str in the facts: a failed condition quotes it by repr.
    wanted = trigger or definition.trigger.value
    scheduled = change_id is None and wanted == Trigger.SCHEDULED
    # A tick is not a change: what a scheduled run's conditions read (nothing changed).
    facts = scheduled_facts(entity) if scheduled else build_facts(change, entity, wanted)
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
        "actions": _checked_plan(session, settings, definition, entity),
        "status": definition.status,
    }
