"""The lifecycle table of DOMAIN.md, checked pair by pair."""

from __future__ import annotations

import itertools

import pytest

from gov_pipeline.domain.errors import IllegalTransitionError, InvalidInputError
from gov_pipeline.domain.lifecycle import POLICY_LIFECYCLE
from gov_pipeline.domain.statuses import PolicyStatus

check_transition = POLICY_LIFECYCLE.check

ALLOWED = {
    ("draft", "in_review"), ("draft", "archived"),
    ("in_review", "approved"), ("in_review", "draft"), ("in_review", "archived"),
    ("approved", "published"), ("approved", "in_review"), ("approved", "archived"),
    ("published", "in_review"), ("published", "archived"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("source", "target"),
    list(itertools.product([s.value for s in PolicyStatus], repeat=2)),
)
def test_every_pair_follows_the_table(source: str, target: str) -> None:
    if (source, target) in ALLOWED:
        assert check_transition(source, target) == PolicyStatus(target)
    else:
        with pytest.raises(IllegalTransitionError) as err:
            check_transition(source, target)
        assert source in str(err.value) and target in str(err.value)


def test_archived_is_final() -> None:
    for target in PolicyStatus:
        with pytest.raises(IllegalTransitionError):
            check_transition("archived", target.value)


def test_unknown_status_is_invalid_input_naming_the_choices() -> None:
    with pytest.raises(InvalidInputError) as err:
        check_transition("draft", "shipped")
    assert "shipped" in str(err.value) and "in_review" in str(err.value)
