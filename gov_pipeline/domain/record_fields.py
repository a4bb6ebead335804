"""Validation of the fields a caller may set on each governed entity type (pure: no database).

One pydantic model per entity type lists its editable fields; every field is optional so
the same model checks updates; `validate_fields` adds what the kind says (required fields,
read-only ones) and normalises empty JSON containers.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gov_pipeline.domain.entities import EntityKind, kind_of
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.domain.statuses import (
    EntityType,
    ReviewFrequency,
    RiskLevel,
    RiskTreatment,
    TaskPriority,
)
from gov_pipeline.domain.storable import check_storable

MAX_CONTENT_CHARS = 5_000_000


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, str_strip_whitespace=False)

    title: str | None = Field(default=None, min_length=1, max_length=500)
    owner_id: str | None = Field(default=None, min_length=1, max_length=100)
    tags: list[str] | None = None
    custom_fields: dict[str, Any] | None = None


class PolicyFields(_Fields):
    policy_type: str | None = Field(default=None, min_length=1, max_length=200)
    content: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS)
    purpose: str | None = None
    scope: str | None = None
    business_units: list[str] | None = None
    version: str | None = Field(default=None, min_length=1, max_length=50)
    version_number: int | None = Field(default=None, ge=1)
    effective_date: date | None = None
    review_frequency: ReviewFrequency | None = None
    next_review_date: date | None = None
    parent_policy_id: int | None = Field(default=None, ge=1)
    requires_acknowledgment: bool | None = None


class RiskFields(_Fields):
    description: str | None = None
    category: str | None = Field(default=None, min_length=1, max_length=200)
    likelihood: int | None = Field(default=None, ge=1, le=5)
    impact: int | None = Field(default=None, ge=1, le=5)
    treatment: RiskTreatment | None = None
    review_frequency: ReviewFrequency | None = None
    next_review_date: date | None = None
    business_units: list[str] | None = None


class RequirementFields(_Fields):
    description: str | None = None
    framework: str | None = Field(default=None, min_length=1, max_length=200)
    reference: str | None = Field(default=None, max_length=200)
    due_date: date | None = None
    last_assessed_date: date | None = None
    policy_id: int | None = Field(default=None, ge=1)


class TaskFields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, str_strip_whitespace=False)

    title: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = None
    priority: TaskPriority | None = None
    assignee_id: str | None = Field(default=None, min_length=1, max_length=100)
    due_date: date | None = None
    entity_type: EntityType | None = None
    entity_id: str | None = Field(default=None, min_length=1, max_length=100)


class SopFields(_Fields):
    process_area: str | None = Field(default=None, min_length=1, max_length=200)
    content: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS)
    version: str | None = Field(default=None, min_length=1, max_length=50)
    effective_date: date | None = None
    review_frequency: ReviewFrequency | None = None
    next_review_date: date | None = None
    policy_id: int | None = Field(default=None, ge=1)


class ExceptionFields(_Fields):
    policy_id: int | None = Field(default=None, ge=1)
    justification: str | None = None
    compensating_controls: str | None = None
    risk_level: RiskLevel | None = None
    requested_by: str | None = Field(default=None, min_length=1, max_length=100)
    start_date: date | None = None
    expiry_date: date | None = None


FIELD_MODELS: dict[EntityType, type[BaseModel]] = {
    EntityType.POLICY: PolicyFields,
    EntityType.RISK: RiskFields,
    EntityType.COMPLIANCE_REQUIREMENT: RequirementFields,
    EntityType.TASK: TaskFields,
    EntityType.SOP: SopFields,
    EntityType.POLICY_EXCEPTION: ExceptionFields,
}

# Defaults written on create when a field is cleared (None): JSON containers stay JSON.
_EMPTY = {"business_units": list, "tags": list, "custom_fields": dict}


def editable_fields(entity_type: EntityType) -> tuple[str, ...]:
    """The fields a caller may set on `entity_type`, in model order."""
    return tuple(FIELD_MODELS[entity_type].model_fields)


def _parse(kind: EntityKind, given: dict[str, Any]) -> dict[str, Any]:
    try:
        parsed = FIELD_MODELS[kind.entity_type].model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or kind.noun
        raise InvalidInputError(where, first["msg"]) from None
    # Enums as their plain string values: they become condition facts.
    return {k: getattr(v, "value", v) for k, v in parsed.model_dump(include=set(given)).items()}


def validate_fields(entity_type: str, values: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """Check caller-supplied fields of an `entity_type` and return them normalised (only
    those given; `status` is checked by the lifecycle, not here).

    Raises:
        InvalidInputError: a field is unknown, read-only, missing (on create) or malformed;
            the message names the field.
    """
    kind = kind_of(entity_type)
    for name in values:
        if name in kind.read_only and not (creating and name == "status"):
            raise InvalidInputError(name, "cannot be set here")
    given = {k: v for k, v in values.items() if k != "status"}
    for name, value in given.items():
        check_storable(name, value)
    result = _parse(kind, given)
    if creating:
        for required in kind.required:
            if result.get(required) in (None, ""):
                raise InvalidInputError(required, "is required")
    for required in kind.required:
        if required in result and result[required] is None:
            raise InvalidInputError(required, "cannot be empty")
    for name, empty in _EMPTY.items():
        if name in result and result[name] is None:
            result[name] = empty()
    return result


def validate_policy_fields(values: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """`validate_fields` for a policy."""
    return validate_fields(EntityType.POLICY, values, creating=creating)
