"""Status lifecycles: each governed entity type's statuses, where a new row starts, and which
moves are allowed. The database enforces the same rules for every writer (db/integrity.py
builds its triggers from `LIFECYCLES`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gov_pipeline.domain.errors import IllegalTransitionError, InvalidInputError
from gov_pipeline.domain.statuses import (
    EntityType,
    ExceptionStatus,
    PolicyStatus,
    RequirementStatus,
    RiskStatus,
    TaskStatus,
)


@dataclass(frozen=True)
class Lifecycle:
    """The statuses of one entity type, its initial status and its allowed moves.

    `revise_to` is where an approval flow that ends with "changes requested" sends the
    entity back to (when the move is allowed from where it stands).
    """

    entity_type: EntityType
    initial: str
    transitions: Mapping[str, frozenset[str]]
    revise_to: str | None = None

    def __post_init__(self) -> None:
        targets = set().union(*self.transitions.values())
        unknown = targets - set(self.transitions) | {self.initial} - set(self.transitions)
        if unknown or (self.revise_to is not None and self.revise_to not in self.transitions):
            raise ValueError(f"{self.entity_type} lifecycle names unknown statuses: {unknown}")

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

    def sent_back_from(self, status: str) -> str | None:
        """Where "changes requested" moves an entity standing at `status`: `revise_to`, when
        the lifecycle allows that move; None when it stays where it is."""
        if self.revise_to is None or not self.allows(status, self.revise_to):
            return None
        return self.revise_to

    def pairs(self) -> list[tuple[str, str]]:
        """Every allowed (from, to) move, in a stable order."""
        return [(f, t) for f in self.statuses for t in sorted(self.transitions[f])]


S = PolicyStatus
# A governed document: policies and SOPs share this lifecycle.
_DOCUMENT: dict[str, frozenset[str]] = {
    S.DRAFT: frozenset({S.IN_REVIEW, S.ARCHIVED}),
    S.IN_REVIEW: frozenset({S.APPROVED, S.DRAFT, S.ARCHIVED}),
    S.APPROVED: frozenset({S.PUBLISHED, S.IN_REVIEW, S.ARCHIVED}),
    S.PUBLISHED: frozenset({S.IN_REVIEW, S.ARCHIVED}),
    S.ARCHIVED: frozenset(),
}

POLICY_LIFECYCLE = Lifecycle(
    EntityType.POLICY, initial=S.DRAFT, transitions=_DOCUMENT, revise_to=S.DRAFT
)
SOP_LIFECYCLE = Lifecycle(EntityType.SOP, initial=S.DRAFT, transitions=_DOCUMENT, revise_to=S.DRAFT)

R = RiskStatus
RISK_LIFECYCLE = Lifecycle(
    EntityType.RISK,
    initial=R.IDENTIFIED,
    transitions={
        R.IDENTIFIED: frozenset({R.ASSESSED, R.CLOSED}),
        R.ASSESSED: frozenset({R.MITIGATING, R.ACCEPTED, R.IDENTIFIED, R.CLOSED}),
        R.MITIGATING: frozenset({R.MONITORED, R.ASSESSED, R.CLOSED}),
        R.ACCEPTED: frozenset({R.MONITORED, R.ASSESSED, R.CLOSED}),
        R.MONITORED: frozenset({R.ASSESSED, R.CLOSED}),
        R.CLOSED: frozenset({R.IDENTIFIED}),  # reopened
    },
    revise_to=R.IDENTIFIED,
)

Q = RequirementStatus
REQUIREMENT_LIFECYCLE = Lifecycle(
    EntityType.COMPLIANCE_REQUIREMENT,
    initial=Q.NOT_STARTED,
    transitions={
        Q.NOT_STARTED: frozenset({Q.IN_PROGRESS, Q.NOT_APPLICABLE}),
        Q.IN_PROGRESS: frozenset({Q.EVIDENCE_SUBMITTED, Q.NOT_APPLICABLE}),
        Q.EVIDENCE_SUBMITTED: frozenset({Q.COMPLIANT, Q.NON_COMPLIANT, Q.IN_PROGRESS}),
        Q.COMPLIANT: frozenset({Q.IN_PROGRESS, Q.RETIRED}),  # reassessed, or retired
        Q.NON_COMPLIANT: frozenset({Q.IN_PROGRESS, Q.RETIRED}),
        Q.NOT_APPLICABLE: frozenset({Q.NOT_STARTED, Q.RETIRED}),
        Q.RETIRED: frozenset(),
    },
    revise_to=Q.IN_PROGRESS,
)

T = TaskStatus
TASK_LIFECYCLE = Lifecycle(
    EntityType.TASK,
    initial=T.TODO,
    transitions={
        T.TODO: frozenset({T.IN_PROGRESS, T.DONE, T.CANCELLED}),
        T.IN_PROGRESS: frozenset({T.TODO, T.DONE, T.CANCELLED}),
        T.DONE: frozenset({T.IN_PROGRESS}),  # reopened
        T.CANCELLED: frozenset(),
    },
    revise_to=T.IN_PROGRESS,
)

X = ExceptionStatus
EXCEPTION_LIFECYCLE = Lifecycle(
    EntityType.POLICY_EXCEPTION,
    initial=X.REQUESTED,
    transitions={
        X.REQUESTED: frozenset({X.UNDER_REVIEW, X.WITHDRAWN}),
        X.UNDER_REVIEW: frozenset({X.APPROVED, X.REJECTED, X.REQUESTED, X.WITHDRAWN}),
        X.APPROVED: frozenset({X.EXPIRED, X.REVOKED}),
        X.REJECTED: frozenset(),
        X.EXPIRED: frozenset(),
        X.REVOKED: frozenset(),
        X.WITHDRAWN: frozenset(),
    },
    revise_to=X.REQUESTED,
)

LIFECYCLES: dict[EntityType, Lifecycle] = {
    lifecycle.entity_type: lifecycle
    for lifecycle in (
        POLICY_LIFECYCLE, RISK_LIFECYCLE, REQUIREMENT_LIFECYCLE, TASK_LIFECYCLE, SOP_LIFECYCLE,
        EXCEPTION_LIFECYCLE,
    )
}  # fmt: skip


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
