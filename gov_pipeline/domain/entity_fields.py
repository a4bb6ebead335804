"""The fields of each entity type, and what a workflow's conditions can read (pure: no db)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from gov_pipeline.domain.statuses import EntityType, Trigger


@dataclass(frozen=True)
class FieldSet:
    """The field names one condition root can hold; a path goes below a field only when it
    is a JSON container (`containers`: a list or a mapping)."""

    owner: str  # what holds these fields, for messages: "policy", "the approval decision"
    names: tuple[str, ...]
    containers: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.containers <= set(self.names):
            raise ValueError(f"containers of {self.owner} must be among its names")


# The columns of each entity's table, in table order. They are written out here (the domain
# does not import the database layer); a unit test compares them with the models. A new
# entity type is one more entry.
ENTITY_FIELDS: Final[Mapping[EntityType, FieldSet]] = MappingProxyType(
    {
        EntityType.POLICY: FieldSet(
            owner="policy",
            names=(
                *("id", "tenant_id", "title", "policy_type", "content", "purpose", "scope"),
                *("owner_id", "business_units", "status", "version", "version_number"),
                *("effective_date", "review_frequency", "next_review_date", "published_date"),
                *("parent_policy_id", "tags", "custom_fields", "requires_acknowledgment"),
                *("created_by", "updated_by", "deleted_at", "created_at", "updated_at"),
            ),
            containers=frozenset({"business_units", "tags", "custom_fields"}),
        ),
    }
)

# An `approval_decided` change (services/approvals.py `decide`) holds the decision in its old
# and new values and lists `approval_status` as changed, whatever the entity type.
APPROVAL_DECISION_NEW: Final = FieldSet(
    owner="the approval decision",
    names=(
        *("approval_id", "execution_id", "step_index"),
        *("approval_status", "decision", "decided_by"),
    ),
)
APPROVAL_DECISION_OLD: Final = FieldSet(
    owner="the approval before the decision", names=("approval_status",)
)
APPROVAL_DECISION_CHANGED: Final = FieldSet(
    owner="what an approval decision changes", names=("approval_status",)
)


@dataclass(frozen=True)
class ReadableFields:
    """What a workflow's conditions can read: `entity` for `entity.*` and bare names, `old` /
    `new` for `old.*` / `new.*`, `changed` for the names `changed` can list."""

    entity: FieldSet
    old: FieldSet
    new: FieldSet
    changed: FieldSet


def entity_field_set(entity_type: EntityType) -> FieldSet:
    """The fields of `entity_type`; none for a type whose fields are not listed yet."""
    return ENTITY_FIELDS.get(entity_type) or FieldSet(owner=entity_type, names=())


def readable_fields(entity_type: EntityType, trigger: Trigger) -> ReadableFields:
    """What the conditions of a workflow on `entity_type` listening to `trigger` can read.

    Args:
        entity_type: the workflow's entity type.
        trigger: the workflow's trigger; `on_approval_decided` changes hold the decision.

    Returns:
        The field names per condition root.
    """
    entity = entity_field_set(entity_type)
    if trigger is Trigger.ON_APPROVAL_DECIDED:
        return ReadableFields(
            entity, APPROVAL_DECISION_OLD, APPROVAL_DECISION_NEW, APPROVAL_DECISION_CHANGED
        )
    return ReadableFields(entity, entity, entity, entity)
