"""The condition context a workflow is evaluated on: old, new, changed, entity, actor, trigger."""

from __future__ import annotations

from typing import Any

from gov_pipeline.db.models import EntityChange, Record
from gov_pipeline.domain.statuses import Trigger
from gov_pipeline.services.records import record_to_dict


def entity_facts(entity: Record | None) -> dict[str, Any]:
    if entity is None:
        return {}
    return record_to_dict(entity, include_content=False)


def entity_only_facts(entity: Record, trigger: str, actor: str | None = None) -> dict[str, Any]:
    """The condition context when no change is involved (manual runs, deadlines)."""
    return {
        "old": {}, "new": {}, "changed": [], "entity": entity_facts(entity),
        "actor": actor, "trigger": trigger,
    }  # fmt: skip


def scheduled_facts(entity: Record) -> dict[str, Any]:
    """The condition context of a scheduled tick: nothing changed, so `old` and `changed` are
    empty, and `new` is the current row (the same as `entity`)."""
    facts = entity_only_facts(entity, Trigger.SCHEDULED.value)
    facts["new"] = dict(facts["entity"])
    return facts


def build_facts(change: EntityChange, entity: Record | None, trigger: str) -> dict[str, Any]:
    """The condition context of DOMAIN.md: old, new, changed, entity, actor, trigger."""
    return {
        "old": dict(change.old_values or {}),
        "new": dict(change.new_values or {}),
        "changed": list(change.changed_fields or []),
        "entity": entity_facts(entity),
        "actor": change.actor,
        "trigger": trigger,
    }
