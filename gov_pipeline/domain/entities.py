"""The governed entity types: for each, its table, columns, lifecycle, the fields a change
always carries, the date its deadline workflows watch, who owns it and the lane its runs
go to (pure: no database).

Everything that differs between entity types is here; the database layer (tables, capture
and lifecycle triggers), the services, the engine and the CLI read it. Adding an entity type
is one entry here, its field model in `record_fields.py`, its table in `db/models.py` and a
migration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.domain.lifecycle import LIFECYCLES, Lifecycle
from gov_pipeline.domain.statuses import EntityType, PolicyStatus, RiskStatus

# Columns every governed table has, set by the system or by their own operation.
COMMON_READ_ONLY: Final = frozenset(
    {"id", "tenant_id", "status", "deleted_at", "created_at", "updated_at", "created_by",
     "updated_by"}
)  # fmt: skip
_AUDIT = ("created_by", "updated_by", "deleted_at", "created_at", "updated_at")
# Columns naming a policy: it must be a live policy of the record's own tenant (checked by
# the services and, for every writer, by the database: db/integrity.py).
POLICY_REFERENCES: Final = ("policy_id", "parent_policy_id")


@dataclass(frozen=True)
class EntityKind:
    """What the system knows of one governed entity type."""

    entity_type: EntityType
    table: str
    noun: str  # in messages: "risk", "compliance requirement"
    command: str  # the CLI group: "risks", "requirements"
    columns: tuple[str, ...]  # the table's columns, in table order
    containers: frozenset[str]  # JSON columns (lists, mappings)
    required: tuple[str, ...]  # must be given (non-empty) on create
    always: tuple[str, ...]  # always in a captured change's old/new values
    deadline_field: str | None  # the date `on_deadline_*` workflows watch
    owner_field: str  # who owns it (the `assign` action's owner, `include_owner`)
    # Read-only fields beyond the common ones (set by the system).
    system_fields: frozenset[str] = frozenset()
    # Entering a status sets a date column to the day, unless the writer gave it (policy
    # `published` -> published_date); the database does it, for every writer (db/reviews.py).
    stamps: Mapping[str, str] = field(default_factory=dict)
    # The statuses in which a review may be completed (a `reviews` row schedules the next
    # one from `review_frequency`, domain/reviews.py); empty: the type has no review cycle.
    reviewable: frozenset[str] = frozenset()
    default_lane: str = "policy"

    @property
    def lifecycle(self) -> Lifecycle:
        return LIFECYCLES[self.entity_type]

    @property
    def read_only(self) -> frozenset[str]:
        return COMMON_READ_ONLY | self.system_fields

    @property
    def policy_references(self) -> tuple[str, ...]:
        """Its columns that name a policy."""
        return tuple(c for c in POLICY_REFERENCES if c in self.columns)


_DOCUMENT_TAIL = ("policy_id", "tags", "custom_fields", *_AUDIT)

KINDS: Final[Mapping[EntityType, EntityKind]] = MappingProxyType(
    {
        EntityType.POLICY: EntityKind(
            EntityType.POLICY, "policies", "policy", "policies",
            columns=(
                *("id", "tenant_id", "title", "policy_type", "content", "purpose", "scope"),
                *("owner_id", "business_units", "status", "version", "version_number"),
                *("effective_date", "review_frequency", "next_review_date", "published_date"),
                *("parent_policy_id", "tags", "custom_fields", "requires_acknowledgment"),
                *_AUDIT,
            ),
            containers=frozenset({"business_units", "tags", "custom_fields"}),
            required=("title", "policy_type"),
            always=("status", "policy_type"),
            deadline_field="next_review_date",
            owner_field="owner_id",
            system_fields=frozenset({"published_date"}),
            stamps={"published": "published_date"},
            reviewable=frozenset({PolicyStatus.PUBLISHED}),
        ),
        EntityType.RISK: EntityKind(
            EntityType.RISK, "risks", "risk", "risks",
            columns=(
                *("id", "tenant_id", "title", "description", "category", "owner_id", "status"),
                *("likelihood", "impact", "risk_score", "treatment", "review_frequency"),
                *("next_review_date", "business_units", "tags", "custom_fields", *_AUDIT),
            ),
            containers=frozenset({"business_units", "tags", "custom_fields"}),
            required=("title", "category"),
            always=("status", "category", "risk_score"),
            deadline_field="next_review_date",
            owner_field="owner_id",
            system_fields=frozenset({"risk_score"}),  # likelihood x impact, by the database
            reviewable=frozenset(RiskStatus) - {RiskStatus.CLOSED},  # a closed risk is done
            default_lane="assessment",
        ),
        EntityType.COMPLIANCE_REQUIREMENT: EntityKind(
            EntityType.COMPLIANCE_REQUIREMENT, "compliance_requirements",
            "compliance requirement", "requirements",
            columns=(
                *("id", "tenant_id", "title", "description", "framework", "reference"),
                *("owner_id", "status", "due_date", "last_assessed_date", *_DOCUMENT_TAIL),
            ),
            containers=frozenset({"tags", "custom_fields"}),
            required=("title", "framework"),
            always=("status", "framework"),
            deadline_field="due_date",
            owner_field="owner_id",
            default_lane="evidence",
        ),
        EntityType.TASK: EntityKind(
            EntityType.TASK, "tasks", "task", "tasks",
            columns=(
                *("id", "tenant_id", "title", "description", "priority", "status"),
                *("assignee_id", "due_date", "entity_type", "entity_id", "execution_id"),
                *("action_run_id", *_AUDIT),
            ),
            containers=frozenset(),
            required=("title",),
            always=("status", "priority"),
            deadline_field="due_date",
            owner_field="assignee_id",
            system_fields=frozenset({"execution_id", "action_run_id"}),
        ),
        EntityType.SOP: EntityKind(
            EntityType.SOP, "sops", "SOP", "sops",
            columns=(
                *("id", "tenant_id", "title", "process_area", "content", "owner_id", "status"),
                *("version", "effective_date", "review_frequency", "next_review_date"),
                *("published_date", *_DOCUMENT_TAIL),
            ),
            containers=frozenset({"tags", "custom_fields"}),
            required=("title", "process_area"),
            always=("status", "process_area"),
            deadline_field="next_review_date",
            owner_field="owner_id",
            system_fields=frozenset({"published_date"}),
            stamps={"published": "published_date"},
            reviewable=frozenset({PolicyStatus.PUBLISHED}),
        ),
        EntityType.POLICY_EXCEPTION: EntityKind(
            EntityType.POLICY_EXCEPTION, "policy_exceptions", "policy exception", "exceptions",
            columns=(
                *("id", "tenant_id", "policy_id", "title", "justification"),
                *("compensating_controls", "risk_level", "requested_by", "owner_id", "status"),
                *("start_date", "expiry_date", "tags", "custom_fields", *_AUDIT),
            ),
            containers=frozenset({"tags", "custom_fields"}),
            required=("policy_id", "title"),
            always=("status", "policy_id"),
            deadline_field="expiry_date",
            owner_field="owner_id",
        ),
    }
)  # fmt: skip

# Which lane (the original queue) each entity type's runs go to, unless the settings say
# otherwise (GOV_PIPELINE_ENTITY_LANES): the one place routing is configured.
DEFAULT_LANES: Final[Mapping[EntityType, str]] = MappingProxyType(
    {kind.entity_type: kind.default_lane for kind in KINDS.values()}
)
# The lane of a change that is about no governed entity (a decision naming an unknown
# approval, say).
FALLBACK_LANE: Final = "policy"


def kind_of(entity_type: str) -> EntityKind:
    """The kind of `entity_type`.

    Raises:
        InvalidInputError: not a governed entity type.
    """
    try:
        return KINDS[EntityType(entity_type)]
    except ValueError:
        known = ", ".join(KINDS)
        raise InvalidInputError(
            "entity_type", f"unknown entity type {entity_type!r} (one of: {known})"
        ) from None


def kind_of_table(table: str) -> EntityKind:
    for kind in KINDS.values():
        if kind.table == table:
            return kind
    raise KeyError(table)


def parse_lanes(text: str) -> dict[EntityType, str]:
    """`risk=assessment,task=notification` -> the lane of each entity type named.

    Raises:
        InvalidInputError: an entry is not `type=lane`, names an unknown type or an empty lane.
    """
    lanes: dict[EntityType, str] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, sep, lane = (piece.strip() for piece in entry.partition("="))
        if not sep or not lane:
            raise InvalidInputError("GOV_PIPELINE_ENTITY_LANES", f"{entry!r} is not type=lane")
        try:
            lanes[kind_of(name).entity_type] = lane.removeprefix("governance:")
        except InvalidInputError:
            known = ", ".join(KINDS)
            raise InvalidInputError(
                "GOV_PIPELINE_ENTITY_LANES", f"unknown entity type {name!r} (one of: {known})"
            ) from None
    return lanes


@dataclass(frozen=True)
class Routing:
    """The lane of each entity type: the defaults with the configured overrides."""

    overrides: Mapping[EntityType, str] = field(default_factory=dict)

    def lane_of(self, entity_type: str) -> str:
        try:
            kind = EntityType(entity_type)
        except ValueError:
            return FALLBACK_LANE
        return self.overrides.get(kind) or DEFAULT_LANES[kind]

    def lanes(self) -> dict[str, str]:
        """Entity type -> lane, for every governed type."""
        return {str(t): self.lane_of(t) for t in KINDS}
