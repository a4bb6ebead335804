"""Unit tests for the approval flow's next move (gov_pipeline.domain.approval_flow)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gov_pipeline.domain.approval_flow import FlowOutcome, NextMove, initial_statuses, next_move
from gov_pipeline.domain.statuses import ApprovalMode, ApprovalStatus

SEQ, PAR = ApprovalMode.SEQUENTIAL, ApprovalMode.PARALLEL
W = ApprovalStatus.WAITING
P = ApprovalStatus.PENDING
A = ApprovalStatus.APPROVED
R = ApprovalStatus.REJECTED
C = ApprovalStatus.CHANGES_REQUESTED
S = ApprovalStatus.SKIPPED
X = ApprovalStatus.WITHDRAWN


@pytest.mark.parametrize(
    ("mode", "steps", "expected"),
    [
        (SEQ, 1, [P]),
        (SEQ, 3, [P, W, W]),
        (PAR, 1, [P]),
        (PAR, 3, [P, P, P]),
    ],
    ids=["seq-1", "seq-3", "par-1", "par-3"],
)
def test_initial_statuses(mode: ApprovalMode, steps: int, expected: list[ApprovalStatus]) -> None:
    assert initial_statuses(mode, steps) == expected


@pytest.mark.parametrize("mode", [SEQ, PAR])
def test_initial_statuses_then_next_move_waits(mode: ApprovalMode) -> None:
    assert next_move(mode, initial_statuses(mode, 3)) == NextMove(FlowOutcome.WAIT)


@pytest.mark.parametrize(
    ("mode", "statuses", "expected"),
    [
        # sequential: step 1 of 3 approved -> ask step 2
        (SEQ, [A, W, W], NextMove(FlowOutcome.OPEN, (1,))),
        (SEQ, [A, A, W], NextMove(FlowOutcome.OPEN, (2,))),
        # all approved
        (SEQ, [A], NextMove(FlowOutcome.APPROVED)),
        (SEQ, [A, A, A], NextMove(FlowOutcome.APPROVED)),
        (PAR, [A, A, A], NextMove(FlowOutcome.APPROVED)),
        # any rejection ends it, even with others pending or waiting
        (SEQ, [R, W, W], NextMove(FlowOutcome.REJECTED)),
        (SEQ, [A, R, W], NextMove(FlowOutcome.REJECTED)),
        (PAR, [P, R, P], NextMove(FlowOutcome.REJECTED)),
        (PAR, [A, P, R], NextMove(FlowOutcome.REJECTED)),
        # a rejection wins over a change request
        (PAR, [C, R, P], NextMove(FlowOutcome.REJECTED)),
        # a change request ends it
        (SEQ, [C, W, W], NextMove(FlowOutcome.CHANGES_REQUESTED)),
        (PAR, [A, C, P], NextMove(FlowOutcome.CHANGES_REQUESTED)),
        # a withdrawn step (the execution was cancelled) ends it, with nothing to follow:
        # never approved because the steps left open were withdrawn
        (SEQ, [A, X], NextMove(FlowOutcome.WITHDRAWN)),
        (SEQ, [X, X, X], NextMove(FlowOutcome.WITHDRAWN)),
        (PAR, [A, X, A], NextMove(FlowOutcome.WITHDRAWN)),
        (SEQ, [R, X], NextMove(FlowOutcome.WITHDRAWN)),
        (PAR, [C, X, P], NextMove(FlowOutcome.WITHDRAWN)),
        # someone still has to decide
        (PAR, [A, P, A], NextMove(FlowOutcome.WAIT)),
        (PAR, [P, P, P], NextMove(FlowOutcome.WAIT)),
        (SEQ, [A, P, W], NextMove(FlowOutcome.WAIT)),
        (SEQ, [P, W, W], NextMove(FlowOutcome.WAIT)),
    ],
)
def test_next_move(mode: ApprovalMode, statuses: list[ApprovalStatus], expected: NextMove) -> None:
    assert next_move(mode, statuses) == expected


def test_next_move_parallel_opens_every_waiting_step() -> None:
    assert next_move(PAR, [A, W, A, W]) == NextMove(FlowOutcome.OPEN, (1, 3))


def test_next_move_accepts_a_tuple() -> None:
    assert next_move(SEQ, (A, W)) == NextMove(FlowOutcome.OPEN, (1,))


MODES = st.sampled_from(list(ApprovalMode))
# The statuses a live flow holds when next_move is asked: SKIPPED is only written after the
# flow has ended (continuation.py), next to the REJECTED / CHANGES_REQUESTED that ended it;
# WITHDRAWN only when its execution is cancelled, which no continuation claims.
LIVE = [W, P, A, R, C]
LIVE_LISTS = st.lists(st.sampled_from(LIVE), min_size=1, max_size=8)
ANY_LISTS = st.lists(st.sampled_from(list(ApprovalStatus)), min_size=1, max_size=8)


@given(mode=MODES, statuses=ANY_LISTS)
def test_next_move_never_raises_withdrawal_wins_then_rejection(
    mode: ApprovalMode, statuses: list[ApprovalStatus]
) -> None:
    move = next_move(mode, statuses)

    assert isinstance(move.outcome, FlowOutcome)
    assert (move.outcome is FlowOutcome.WITHDRAWN) == (X in statuses)
    live = X not in statuses
    assert (move.outcome is FlowOutcome.REJECTED) == (live and R in statuses)
    assert (move.outcome is FlowOutcome.CHANGES_REQUESTED) == (
        live and C in statuses and R not in statuses
    )
    if move.outcome is FlowOutcome.APPROVED:
        assert X not in statuses
    if move.outcome is not FlowOutcome.OPEN:
        assert move.open_steps == ()


@given(mode=MODES, statuses=LIVE_LISTS)
def test_next_move_properties(mode: ApprovalMode, statuses: list[ApprovalStatus]) -> None:
    move = next_move(mode, statuses)

    # REJECTED iff some step rejected
    assert (move.outcome is FlowOutcome.REJECTED) == (R in statuses)
    # nothing rejected or sent back and every step approved -> APPROVED
    if R not in statuses and C not in statuses and all(s is A for s in statuses):
        assert move.outcome is FlowOutcome.APPROVED
    if move.outcome is FlowOutcome.APPROVED:
        assert all(s is A for s in statuses)
    if move.outcome is FlowOutcome.WAIT:
        assert P in statuses and R not in statuses and C not in statuses
    if move.outcome is not FlowOutcome.OPEN:
        assert move.open_steps == ()
    else:
        # OPEN only when nothing is pending (nor ended the flow) and something waits
        assert P not in statuses and R not in statuses and C not in statuses
        waiting = [i for i, s in enumerate(statuses) if s is W]
        assert waiting
        if mode is SEQ:
            # exactly the lowest waiting index
            assert move.open_steps == (waiting[0],)
        else:
            assert move.open_steps == tuple(waiting)


@pytest.mark.parametrize("mode", [SEQ, PAR])
def test_next_move_never_opens_nothing(mode: ApprovalMode) -> None:
    move = next_move(mode, [A, S])
    assert move.outcome is not FlowOutcome.OPEN or move.open_steps
