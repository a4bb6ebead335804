"""Status lifecycles: each governed entity type's statuses, where a new row starts, and which
moves are allowed. The database enforces the same rules for every writer (db/integrity.py
builds its triggers from `LIFECYCLES`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gov_pipeline.domain.errors import IllegalTransitionError, InvalidInputError
from gov_pipeline.domain.statuses import EntityType, PolicyStatus


@dataclass(frozen=True)
class Lifecycle:
    """The statuses of one entity type, its initial status and its allowed moves."""

    entity_type: EntityType
    initial: str
    transitions: Mapping[str, frozenset[str]]

    @property
    def statuses(self) -> tuple[str, ...]:
        return tuple(self.transitions)

    def parse(self, value: str) -> str:
        """Return `value` if it is a status of this lifecycle.

        Raises:
            InvalidInputError: it is not.
        """
        if value not in self.transitions:
            allowed = ", ".join(self.statuses)
            raise InvalidInputError("status", f"unknown status {value!r} (one of: {allowed})")
        return value

    def check(self, from_status: str, to_status: str) -> str:
        """Validate a move and return the target status.

        Raises:
            InvalidInputError: either status is unknown.
            IllegalTransitionError: the lifecycle does not allow the move.
        """
        source, target = self.parse(from_status), self.parse(to_status)
        if target not in self.transitions[source]:
            raise IllegalTransitionError(source, target)
        return target

    def allows(self, from_status: str, to_status: str) -> bool:
        return to_status in self.transitions.get(from_status, frozenset())

    def pairs(self) -> list[tuple[str, str]]:
        """Every allowed (from, to) move, in a stable order."""
        return [(f, t) for f in self.statuses for t in sorted(self.transitions[f])]


S = PolicyStatus

POLICY_LIFECYCLE = Lifecycle(
    EntityType.POLICY,
    initial=S.DRAFT,
    transitions={
        S.DRAFT: frozenset({S.IN_REVIEW, S.ARCHIVED}),
        S.IN_REVIEW: frozenset({S.APPROVED, S.DRAFT, S.ARCHIVED}),
        S.APPROVED: frozenset({S.PUBLISHED, S.IN_REVIEW, S.ARCHIVED}),
        S.PUBLISHED: frozenset({S.IN_REVIEW, S.ARCHIVED}),
        S.ARCHIVED: frozenset(),
    },
)

LIFECYCLES: dict[EntityType, Lifecycle] = {EntityType.POLICY: POLICY_LIFECYCLE}

# The policy lifecycle as PolicyStatus values (kept for readers of the policy table).
ALLOWED_TRANSITIONS: dict[PolicyStatus, frozenset[PolicyStatus]] = {
    PolicyStatus(f): frozenset(PolicyStatus(t) for t in to)
    for f, to in POLICY_LIFECYCLE.transitions.items()
}


def lifecycle_of(entity_type: str) -> Lifecycle:
    """The lifecycle of `entity_type`.

    Raises:
        InvalidInputError: no governed entity type of that name has one.
    """
    try:
        return LIFECYCLES[EntityType(entity_type)]
    except (ValueError, KeyError):
        known = ", ".join(LIFECYCLES)
        raise InvalidInputError(
            "entity_type", f"no lifecycle for {entity_type!r} ({known})"
        ) from None


def parse_status(value: str) -> PolicyStatus:
    """Return the policy status named by `value`.

    Raises:
        InvalidInputError: `value` is not a policy status.
    """
    return PolicyStatus(POLICY_LIFECYCLE.parse(value))


def check_transition(from_status: str, to_status: str) -> PolicyStatus:
    """Validate a policy move and return the target status.

    Raises:
        InvalidInputError: either status is unknown.
        IllegalTransitionError: the lifecycle does not allow the move.
    """
    return PolicyStatus(POLICY_LIFECYCLE.check(from_status, to_status))
