"""Validation of the policy fields a caller may set (pure: no database)."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.domain.statuses import ReviewFrequency
from gov_pipeline.domain.storable import check_storable

# Fields set only through their own operation (status, soft delete) or by the system.
READ_ONLY_FIELDS = frozenset(
    {"id", "tenant_id", "status", "deleted_at", "created_at", "updated_at", "created_by",
     "updated_by", "published_date"}
)  # fmt: skip

MAX_CONTENT_CHARS = 5_000_000


class PolicyFields(BaseModel):
    """Every editable policy field; all optional so the same model checks updates."""

    model_config = ConfigDict(extra="forbid", strict=False, str_strip_whitespace=False)

    title: str | None = Field(default=None, min_length=1, max_length=500)
    policy_type: str | None = Field(default=None, min_length=1, max_length=200)
    content: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS)
    purpose: str | None = None
    scope: str | None = None
    owner_id: str | None = Field(default=None, min_length=1, max_length=100)
    business_units: list[str] | None = None
    version: str | None = Field(default=None, min_length=1, max_length=50)
    version_number: int | None = Field(default=None, ge=1)
    effective_date: date | None = None
    review_frequency: ReviewFrequency | None = None
    next_review_date: date | None = None
    parent_policy_id: int | None = Field(default=None, ge=1)
    tags: list[str] | None = None
    custom_fields: dict[str, Any] | None = None
    requires_acknowledgment: bool | None = None


def validate_policy_fields(values: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """Check caller-supplied fields and return them normalised (only those given).

    Raises:
        InvalidInputError: a field is unknown, read-only, missing (on create) or malformed;
            the message names the field.
    """
    for name in values:
        if name in READ_ONLY_FIELDS and not (creating and name == "status"):
            raise InvalidInputError(name, "cannot be set here")
    given = {k: v for k, v in values.items() if k != "status"}
    for name, value in given.items():
        check_storable(name, value)
    try:
        parsed = PolicyFields.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "policy"
        raise InvalidInputError(where, first["msg"]) from None
    result = parsed.model_dump(include=set(given))
    if creating:
        for required in ("title", "policy_type"):
            if not result.get(required):
                raise InvalidInputError(required, "is required")
    for nullable_forbidden in ("title", "policy_type"):
        if nullable_forbidden in result and result[nullable_forbidden] is None:
            raise InvalidInputError(nullable_forbidden, "cannot be empty")
    for listish in ("business_units", "tags"):
        if listish in result and result[listish] is None:
            result[listish] = []
    if "custom_fields" in result and result["custom_fields"] is None:
        result["custom_fields"] = {}
    if result.get("review_frequency") is not None:
        result["review_frequency"] = ReviewFrequency(result["review_frequency"]).value
    return result
