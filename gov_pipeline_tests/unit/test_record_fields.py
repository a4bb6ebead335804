"""Validation of caller-supplied policy fields."""

from __future__ import annotations

from datetime import date

import pytest

from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.domain.record_fields import validate_policy_fields


def test_create_requires_title_and_type() -> None:
    with pytest.raises(InvalidInputError, match="title"):
        validate_policy_fields({"policy_type": "Security"}, creating=True)
    with pytest.raises(InvalidInputError, match="policy_type"):
        validate_policy_fields({"title": "T"}, creating=True)


def test_values_are_normalised() -> None:
    out = validate_policy_fields(
        {"title": "T", "policy_type": "S", "next_review_date": "2027-01-31", "tags": None},
        creating=True,
    )
    assert out["next_review_date"] == date(2027, 1, 31)
    assert out["tags"] == []


@pytest.mark.parametrize(
    ("fields", "culprit"),
    [
        ({"effective_date": "31/01/2027"}, "effective_date"),
        ({"review_frequency": "sometimes"}, "review_frequency"),
        ({"tags": "not-a-list"}, "tags"),
        ({"version_number": 0}, "version_number"),
        ({"title": ""}, "title"),
        ({"colour": "blue"}, "colour"),
        ({"tenant_id": "other"}, "tenant_id"),
        ({"id": 5}, "id"),
        ({"content": "a\x00b"}, "content"),
        ({"custom_fields": {"k": ["\x00"]}}, "custom_fields"),
    ],
)
def test_malformed_or_forbidden_fields_name_the_field(
    fields: dict[str, object], culprit: str
) -> None:
    with pytest.raises(InvalidInputError) as err:
        validate_policy_fields(fields, creating=False)
    assert err.value.field == culprit
