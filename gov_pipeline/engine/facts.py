"""The condition context a workflow is evaluated on: old, new, changed, entity, actor, trigger."""

from __future__ import annotations

from typing import Any

from gov_pipeline.db.models import EntityChange, Record
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
