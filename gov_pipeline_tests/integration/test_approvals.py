"""Approvals that wait: sequential and parallel, reject, request changes, wrong approver,
replayed decisions — on both databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import (
    ActionRun,
    Approval,
    Notification,
    Task,
    WorkflowExecution,
)
from gov_pipeline.domain.errors import ConflictError, InvalidInputError, PermissionDeniedError
from gov_pipeline.services import approvals
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import (
    apply_yaml,
    count,
    make_settings,
    move,
    new_policy,
    policy_status,
    process,
    start_example_approval,
)

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "examples/workflows/policy_approval.yaml"
).read_text()


@pytest.fixture
def settings(db_url: str):  # type: ignore[no-untyped-def]
    return make_settings(db_url)


@pytest.fixture
def flow(sessions: sessionmaker[Session], tenant: str, settings: Any) -> int:
    """The example two-step sequential approval, started on one policy."""
    return start_example_approval(sessions, settings, (("acme", "mallory", "viewer"),))


def _steps(sessions: sessionmaker[Session]) -> list[Approval]:
    with sessions.begin() as session:
        return list(session.scalars(select(Approval).order_by(Approval.step_index)))


def _execution(sessions: sessionmaker[Session]) -> WorkflowExecution:
    with sessions.begin() as session:
        return session.scalars(
            select(WorkflowExecution).where(WorkflowExecution.status != "skipped")
        ).one()


def decide(
    sessions: sessionmaker[Session], step: Approval, user: str, decision: str, **kw: Any
) -> None:
    with sessions.begin() as session:
        approvals.decide(
            session, tenant_id="acme", approval_id=step.id, user_id=user, decision=decision, **kw
        )


def _notified(sessions: sessionmaker[Session], kind: str) -> list[str]:
    with sessions.begin() as session:
        return sorted(
            session.scalars(select(Notification.user_id).where(Notification.type == kind))
        )


def test_sequential_approval_waits_for_each_step_in_order(
    sessions: sessionmaker[Session], settings: Any, flow: int
) -> None:
    first, second = _steps(sessions)
    assert (first.status, second.status) == ("pending", "waiting")
    assert _execution(sessions).status == "awaiting_approval"
    assert policy_status(sessions, flow) == "in_review"  # nothing approved before anyone approved
    assert _notified(sessions, "workflow_approval_required") == ["carol"]

    with pytest.raises(ConflictError, match="not open yet"):
        decide(sessions, second, "ciso", "approve")
    decide(
        sessions,
        first,
        "carol",
        "approve",
        comment="looks fine",
        signature={"type": "typed", "data": "Carol"},
    )
    process(sessions, settings)
    first, second = _steps(sessions)
    assert (first.status, second.status) == ("approved", "pending")
    assert first.signature is not None and first.signature["type"] == "typed"
    assert _notified(sessions, "workflow_approval_required") == ["carol", "ciso"]
    assert _execution(sessions).status == "awaiting_approval"
    assert policy_status(sessions, flow) == "in_review"

    decide(sessions, second, "ciso", "approve")
    process(sessions, settings)
    execution = _execution(sessions)
    assert execution.status == "completed" and execution.output["outcome"] == "approved"  # type: ignore[index]
    assert policy_status(sessions, flow) == "approved"
    assert _notified(sessions, "workflow_approved") == ["olivia"]


def test_only_a_listed_approver_may_decide_and_a_decision_is_final(
    sessions: sessionmaker[Session], settings: Any, flow: int
) -> None:
    first, _ = _steps(sessions)
    with pytest.raises(PermissionDeniedError, match="mallory"):
        decide(sessions, first, "mallory", "approve")
    with pytest.raises(PermissionDeniedError):
        decide(sessions, first, "ciso", "approve")  # ciso is step 2's approver, not step 1's
    with pytest.raises(InvalidInputError, match="decision"):
        decide(sessions, first, "carol", "maybe")
    with pytest.raises(InvalidInputError, match=r"signature\.type"):
        decide(sessions, first, "carol", "approve", signature={"type": "scribble"})
    assert _steps(sessions)[0].status == "pending"
    decide(sessions, first, "carol", "approve")
    with pytest.raises(ConflictError, match="already approved"):
        decide(sessions, first, "carol", "reject")


def test_rejection_ends_the_flow_and_runs_on_rejected_once(
    sessions: sessionmaker[Session], settings: Any, flow: int
) -> None:
    first, _ = _steps(sessions)
    decide(sessions, first, "carol", "reject", comment="scope is wrong")
    process(sessions, settings)
    first, second = _steps(sessions)
    assert (first.status, second.status) == ("rejected", "skipped")
    execution = _execution(sessions)
    assert execution.status == "completed" and execution.output["outcome"] == "rejected"  # type: ignore[index]
    assert policy_status(sessions, flow) == "in_review"
    assert _notified(sessions, "workflow_rejected") == ["olivia"]
    assert count(sessions, Task) == 1


def test_requested_changes_send_the_policy_back_to_draft(
    sessions: sessionmaker[Session], settings: Any, flow: int
) -> None:
    first, _ = _steps(sessions)
    decide(sessions, first, "carol", "request_changes", comment="add a scope section")
    process(sessions, settings)
    assert policy_status(sessions, flow) == "draft"
    execution = _execution(sessions)
    assert execution.output["outcome"] == "changes_requested"  # type: ignore[index]
    with sessions.begin() as session:
        titles = session.scalars(
            select(Notification.title).where(Notification.user_id == "olivia")
        ).all()
    assert "Changes requested" in titles
    # Back to review: a fresh execution and fresh approvals.
    move(sessions, flow, "in_review")
    process(sessions, settings)
    assert len(_steps(sessions)) == 4


def test_a_replayed_decision_continues_the_flow_only_once(
    sessions: sessionmaker[Session], settings: Any, flow: int
) -> None:
    first, _ = _steps(sessions)
    decide(sessions, first, "carol", "approve")
    process(sessions, settings)
    before = (count(sessions, Notification), count(sessions, ActionRun))
    with sessions.begin() as session:
        session.execute(text("DELETE FROM consumer_cursors"))
    process(sessions, settings)  # every change again, the decision included
    assert (count(sessions, Notification), count(sessions, ActionRun)) == before
    assert [s.status for s in _steps(sessions)] == ["approved", "pending"]


PARALLEL = """
name: parallel sign-off
tenant_id: acme
type: approval
trigger: on_status_change
conditions: {field: new.status, op: changed_to, value: in_review}
actions:
  - type: request_approval
    mode: parallel
    steps:
      - approvers: {roles: [compliance_officer]}
      - approvers: {users: [ciso]}
    on_approved: [{type: change_status, to: approved}]
"""


def test_parallel_approval_asks_everyone_and_waits_for_all(
    sessions: sessionmaker[Session], tenant: str, settings: Any
) -> None:
    with sessions.begin() as session:
        upsert_user(session, tenant_id="acme", user_id="carol", roles=["compliance_officer"])
    apply_yaml(sessions, PARALLEL)
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    process(sessions, settings)
    first, second = _steps(sessions)
    assert (first.status, second.status) == ("pending", "pending")
    assert _notified(sessions, "workflow_approval_required") == ["carol", "ciso"]
    decide(sessions, second, "ciso", "approve")
    process(sessions, settings)
    assert policy_status(sessions, pid) == "in_review"
    assert _execution(sessions).status == "awaiting_approval"
    decide(sessions, first, "carol", "approve")
    process(sessions, settings)
    assert policy_status(sessions, pid) == "approved"
    assert _execution(sessions).status == "completed"
