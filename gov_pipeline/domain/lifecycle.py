"""The policy status lifecycle: which moves are allowed."""

from __future__ import annotations

from gov_pipeline.domain.errors import IllegalTransitionError, InvalidInputError
from gov_pipeline.domain.statuses import PolicyStatus

S = PolicyStatus

ALLOWED_TRANSITIONS: dict[PolicyStatus, frozenset[PolicyStatus]] = {
    S.DRAFT: frozenset({S.IN_REVIEW, S.ARCHIVED}),
    S.IN_REVIEW: frozenset({S.APPROVED, S.DRAFT, S.ARCHIVED}),
    S.APPROVED: frozenset({S.PUBLISHED, S.IN_REVIEW, S.ARCHIVED}),
    S.PUBLISHED: frozenset({S.IN_REVIEW, S.ARCHIVED}),
    S.ARCHIVED: frozenset(),
}


def parse_status(value: str) -> PolicyStatus:
    """Return the status named by `value`.

    Raises:
        InvalidInputError: `value` is not a policy status.
    """
    try:
        return PolicyStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in PolicyStatus)
        raise InvalidInputError("status", f"unknown status {value!r} (one of: {allowed})") from None


def check_transition(from_status: str, to_status: str) -> PolicyStatus:
    """Validate a move and return the target status.

    Raises:
        InvalidInputError: either status is unknown.
        IllegalTransitionError: the lifecycle does not allow the move.
    """
    source = parse_status(from_status)
    target = parse_status(to_status)
    if target not in ALLOWED_TRANSITIONS[source]:
        raise IllegalTransitionError(source.value, target.value)
    return target
