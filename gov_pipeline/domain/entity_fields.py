"""The fields of each entity type, and what a workflow's conditions can read (pure: no db)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from gov_pipeline.domain.entities import KINDS
from gov_pipeline.domain.statuses import EntityType, Trigger


@dataclass(frozen=True)
class FieldSet:
    """The field names one condition root can hold; a path goes below a field only when it
    is a JSON container (`containers`: a list or a mapping)."""

    owner: str  # what holds these fields, for messages: "policy", "the approval decision"
    names: tuple[str, ...]
    containers: frozenset[str] = field(default_factory=frozenset)
    # Fields of the owner a condition cannot read here, with why (refused with that reason).
    withheld: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.containers <= set(self.names):
            raise ValueError(f"containers of {self.owner} must be among its names")


# The columns of each entity's table (domain/entities.py, written out there: the domain does
# not import the database layer; a unit test compares them with the models).
ENTITY_FIELDS: Final[Mapping[EntityType, FieldSet]] = MappingProxyType(
    {
        entity_type: FieldSet(owner=kind.noun, names=kind.columns, containers=kind.containers)
        for entity_type, kind in KINDS.items()
    }
)

# An `approval_decided` change (captured from an `approval_decisions` row) holds the decision
# in its old and new values and lists `approval_status` as changed, whatever the entity type.
APPROVAL_DECISION_NEW: Final = FieldSet(
    owner="the approval decision",
    names=(
        *("decision_id", "approval_id", "execution_id", "step_index"),
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


# The current row a condition reads as `entity.*` leaves these out (execution inputs keep the
# facts; a document's content may hold megabytes).
WITHHELD_FROM_ENTITY: Final = {
    "content": "it may hold megabytes; test `changed` (contains content) or `new.content`",
}


def entity_field_set(entity_type: EntityType) -> FieldSet:
    """The fields of `entity_type`."""
    return ENTITY_FIELDS[entity_type]


def current_row_fields(entity_type: EntityType) -> FieldSet:
    """What `entity.*` (and a bare name) can read of `entity_type`: its fields but the
    withheld ones."""
    fields = ENTITY_FIELDS[entity_type]
    withheld = {k: v for k, v in WITHHELD_FROM_ENTITY.items() if k in fields.names}
    return FieldSet(
        owner=fields.owner,
        names=tuple(n for n in fields.names if n not in withheld),
        containers=fields.containers - set(withheld),
        withheld=withheld,
    )


def readable_fields(entity_type: EntityType, trigger: Trigger) -> ReadableFields:
    """What the conditions of a workflow on `entity_type` listening to `trigger` can read.

    Args:
        entity_type: the workflow's entity type.
        trigger: the workflow's trigger; `on_approval_decided` changes hold the decision.

    Returns:
        The field names per condition root.
    """
    entity = current_row_fields(entity_type)
    if trigger is Trigger.ON_APPROVAL_DECIDED:
        return ReadableFields(
            entity, APPROVAL_DECISION_OLD, APPROVAL_DECISION_NEW, APPROVAL_DECISION_CHANGED
        )
    every = entity_field_set(entity_type)
    if trigger is Trigger.SCHEDULED:
        return ReadableFields(entity, _no_old_values(every), _scheduled_new(entity), every)
    return ReadableFields(entity, every, every, every)


def _no_old_values(fields: FieldSet) -> FieldSet:
    """`old.*` of a scheduled run: a tick is not a change, so there is nothing before it."""
    reason = "nothing changed; read entity.{}"
    return FieldSet(
        owner="a scheduled run's old values",
        names=(),
        withheld={name: reason.format(name) for name in fields.names},
    )


def _scheduled_new(entity: FieldSet) -> FieldSet:
    """`new.*` of a scheduled run: the current row, as `entity.*` (without the content)."""
    reason = "a scheduled run reads the current row, which leaves it out (it may hold megabytes)"
    return FieldSet(
        owner=entity.owner, names=entity.names, containers=entity.containers,
        withheld={name: reason for name in entity.withheld},
    )  # fmt: skip
