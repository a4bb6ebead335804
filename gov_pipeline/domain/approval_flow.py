"""What an approval flow does next, from the states of its steps (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from gov_pipeline.domain.statuses import ApprovalMode, ApprovalStatus


class FlowOutcome(StrEnum):
    WAIT = "wait"  # someone still has to decide
    OPEN = "open"  # ask the next step(s)
    APPROVED = "approved"
    REJECTED = "rejected"
    CHANGES_REQUESTED = "changes_requested"
    WITHDRAWN = "withdrawn"  # the execution was cancelled: nothing follows


@dataclass(frozen=True)
class NextMove:
    outcome: FlowOutcome
    open_steps: tuple[int, ...] = ()


def initial_statuses(mode: ApprovalMode, steps: int) -> list[ApprovalStatus]:
    """Sequential: only the first step is asked; parallel: all are."""
    if steps < 1:
        return []
    if mode is ApprovalMode.PARALLEL:
        return [ApprovalStatus.PENDING] * steps
    return [ApprovalStatus.PENDING] + [ApprovalStatus.WAITING] * (steps - 1)


def next_move(mode: ApprovalMode, statuses: Sequence[ApprovalStatus]) -> NextMove:
    """The flow's next move after a decision. A rejection or a change request ends it; a
    withdrawn step (its execution was cancelled) ends it with nothing to follow, whatever
    was decided before."""
    if ApprovalStatus.WITHDRAWN in statuses:
        return NextMove(FlowOutcome.WITHDRAWN)
    if ApprovalStatus.REJECTED in statuses:
        return NextMove(FlowOutcome.REJECTED)
    if ApprovalStatus.CHANGES_REQUESTED in statuses:
        return NextMove(FlowOutcome.CHANGES_REQUESTED)
    if ApprovalStatus.PENDING in statuses:
        return NextMove(FlowOutcome.WAIT)
    waiting = [i for i, s in enumerate(statuses) if s is ApprovalStatus.WAITING]
    if not waiting:
        # Nobody left to ask: every step that was asked approved (skipped ones never were).
        return NextMove(FlowOutcome.APPROVED)
    if mode is ApprovalMode.SEQUENTIAL:
        return NextMove(FlowOutcome.OPEN, (waiting[0],))
    return NextMove(FlowOutcome.OPEN, tuple(waiting))


class QuorumState(StrEnum):
    OPEN = "open"  # more votes needed, and the quorum can still be reached
    APPROVED = "approved"  # enough distinct approvers approved
    UNREACHABLE = "unreachable"  # too many voted against: the quorum cannot be reached


def quorum_state(quorum: int, eligible: int, approvals: int, against: int) -> QuorumState:
    """Where a step needing `quorum` approvals of `eligible` approvers stands after
    `approvals` votes for and `against` votes against (reject or request changes)."""
    if approvals >= quorum:
        return QuorumState.APPROVED
    if against > eligible - quorum:
        return QuorumState.UNREACHABLE
    return QuorumState.OPEN
