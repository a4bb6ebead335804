"""Approval steps with rules of their own, on both databases: a quorum (N of M distinct
approvers), delegation to another user of the tenant (only where the definition allows
it), and an escalation target with reassignment and repeats, each recorded once per step
and interval."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.models import (
    Approval,
    ApprovalDecision,
    ApprovalEscalation,
    Notification,
    WorkflowExecution,
)
from gov_pipeline.domain.errors import ConflictError, NotFoundError, PermissionDeniedError
from gov_pipeline.runners.escalation import current_round, escalate_overdue
from gov_pipeline.services import approvals
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import (
    apply_yaml,
    make_settings,
    move,
    new_policy,
    policy_status,
    process,
)

WORKFLOW = """
name: Board approval
tenant_id: acme
type: approval
trigger: on_status_change
conditions: {field: new.status, op: changed_to, value: in_review}
actions:
  - type: request_approval
    mode: parallel
    steps:
      - name: Board
        approvers: {roles: [compliance_officer]}
        quorum: QUORUM
        allow_delegation: DELEGATION
        due_in_hours: 1
        escalation:
          to: {users: [chair]}
          reassign_after_hours: 4
          repeat_every_hours: 2
    on_approved:
      - {type: change_status, to: approved}
"""
BOARD = ("ann", "bob", "cat")  # compliance officers: M = 3


@pytest.fixture
def settings(db_url: str, tenant: str) -> Settings:
    return make_settings(db_url)


def _start(
    sessions: sessionmaker[Session], settings: Settings, quorum: int = 2, delegation: bool = True
) -> tuple[int, int]:
    """The workflow, started on a new policy: (policy id, approval id)."""
    with sessions.begin() as session:
        for user in BOARD:
            upsert_user(session, tenant_id="acme", user_id=user, roles=["compliance_officer"])
        for user in ("chair", "dan", "olivia"):
            upsert_user(session, tenant_id="acme", user_id=user, roles=["viewer"])
        upsert_user(session, tenant_id="globex", user_id="gus", roles=["viewer"])
    text_ = WORKFLOW.replace("QUORUM", str(quorum)).replace("DELEGATION", str(delegation).lower())
    apply_yaml(sessions, text_)
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    process(sessions, settings)
    with sessions.begin() as session:
        (approval_id,) = session.scalars(select(Approval.id)).all()
    return pid, approval_id


def _decide(sessions: sessionmaker[Session], approval_id: int, user: str, decision: str) -> None:
    with sessions.begin() as session:
        approvals.decide(
            session, tenant_id="acme", approval_id=approval_id, user_id=user, decision=decision
        )


def _step(sessions: sessionmaker[Session], approval_id: int) -> Approval:
    with sessions.begin() as session:
        approval = session.get(Approval, approval_id)
        assert approval is not None
        session.expunge(approval)
        return approval


# -- quorum -------------------------------------------------------------------------------


def test_a_quorum_step_waits_for_n_distinct_approvers(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    pid, aid = _start(sessions, settings, quorum=2)
    _decide(sessions, aid, "ann", "approve")
    process(sessions, settings)
    assert _step(sessions, aid).status == "pending"  # 1 of 2
    assert policy_status(sessions, pid) == "in_review"
    with pytest.raises(ConflictError, match="'ann' already decided approval"):
        _decide(sessions, aid, "ann", "approve")
    _decide(sessions, aid, "bob", "approve")
    process(sessions, settings)
    step = _step(sessions, aid)
    assert (step.status, step.decided_by) == ("approved", "bob")
    assert policy_status(sessions, pid) == "approved"
    with sessions.begin() as session:
        execution = session.get(WorkflowExecution, step.execution_id)
        assert execution is not None and execution.status == "completed"


def test_a_quorum_fails_when_too_many_vote_against(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    pid, aid = _start(sessions, settings, quorum=2)
    _decide(sessions, aid, "ann", "reject")
    process(sessions, settings)
    assert _step(sessions, aid).status == "pending"  # bob and cat could still approve
    _decide(sessions, aid, "bob", "request_changes")
    process(sessions, settings)
    # 2 of 3 against: 2 approvals are out of reach; the vote that made it so decides.
    assert _step(sessions, aid).status == "changes_requested"
    assert policy_status(sessions, pid) == "draft"


def test_quorum_votes_from_another_applications_inserts_count_once_each(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    pid, aid = _start(sessions, settings, quorum=2)
    with sessions.begin() as session:
        for user in ("ann", "ann", "cat"):
            session.execute(
                insert(ApprovalDecision).values(
                    tenant_id="acme", approval_id=aid, decided_by=user, decision="approve"
                )
            )
    process(sessions, settings)
    with sessions.begin() as session:
        rows = session.execute(
            select(
                ApprovalDecision.decided_by, ApprovalDecision.outcome, ApprovalDecision.reason
            ).order_by(ApprovalDecision.id)
        ).all()
    assert [(r[0], r[1]) for r in rows] == [
        ("ann", "accepted"), ("ann", "refused"), ("cat", "accepted"),
    ]  # fmt: skip
    assert "already decided" in str(rows[1][2])
    assert policy_status(sessions, pid) == "approved"


def test_a_quorum_larger_than_its_listed_approvers_is_refused_by_validation(
    sessions: sessionmaker[Session], tenant: str
) -> None:
    from gov_pipeline.domain.errors import DefinitionError

    bad = WORKFLOW.replace("{roles: [compliance_officer]}", "{users: [ann, bob]}")
    with pytest.raises(DefinitionError, match="quorum 3 needs at least 3 approvers; 2 listed"):
        apply_yaml(sessions, bad.replace("QUORUM", "3").replace("DELEGATION", "false"))


# -- delegation ---------------------------------------------------------------------------


def test_an_approver_delegates_to_another_user_who_then_decides(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    pid, aid = _start(sessions, settings, quorum=2)
    with sessions.begin() as session:
        approvals.delegate(
            session, tenant_id="acme", approval_id=aid, user_id="ann", to_user="dan",
            comment="on leave",
        )  # fmt: skip
    step = _step(sessions, aid)
    assert [(d["from"], d["to"], d["comment"]) for d in step.delegations] == [
        ("ann", "dan", "on leave")
    ]
    with sessions.begin() as session:
        told = session.scalars(select(Notification.title).where(Notification.user_id == "dan"))
        assert [t for t in told if t.startswith("Approval delegated to you by ann")]
    with pytest.raises(PermissionDeniedError, match="'ann' may not decide"):
        _decide(sessions, aid, "ann", "approve")
    _decide(sessions, aid, "dan", "approve")
    _decide(sessions, aid, "cat", "approve")
    process(sessions, settings)
    assert policy_status(sessions, pid) == "approved"


def test_delegation_is_refused_where_not_allowed_or_not_possible(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    _, aid = _start(sessions, settings, quorum=1, delegation=False)
    cases = [
        ("ann", "dan", PermissionDeniedError, "may not be delegated: its step does not allow"),
    ]
    for by, to, error, message in cases:
        with pytest.raises(error, match=message), sessions.begin() as session:
            approvals.delegate(session, tenant_id="acme", approval_id=aid, user_id=by, to_user=to)
    with sessions.begin() as session:
        session.execute(text("UPDATE approvals SET allow_delegation = :t"), {"t": True})
    cases = [
        ("dan", "chair", PermissionDeniedError, "'dan' may not decide"),  # not an approver
        ("ann", "gus", NotFoundError, "user 'gus' not found in tenant 'acme'"),  # globex's
        ("ann", "bob", ConflictError, "'bob' may already decide"),
    ]
    for by, to, error, message in cases:
        with pytest.raises(error, match=message), sessions.begin() as session:
            approvals.delegate(session, tenant_id="acme", approval_id=aid, user_id=by, to_user=to)
    assert _step(sessions, aid).delegations == []


# -- escalation ---------------------------------------------------------------------------


def test_current_round_counts_whole_intervals_since_the_due_time() -> None:
    assert [current_round(timedelta(hours=h), 2) for h in (0, 1.9, 2, 5.5)] == [0, 0, 1, 2]
    assert current_round(timedelta(hours=50), None) == 0


def test_an_overdue_step_escalates_to_its_target_repeats_and_is_reassigned_once(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    pid, aid = _start(sessions, settings, quorum=1)
    due = _step(sessions, aid).due_at
    assert due is not None

    def at(hours: float) -> tuple[list[int], list[int], int]:
        report = escalate_overdue(sessions, settings, now=due + timedelta(hours=hours))
        return report.escalated, report.reassigned, report.notified

    # Round 0 at the due time: the target and the step's approvers are told.
    assert at(0.5) == ([aid], [], 4)
    assert at(1.0) == ([], [], 0)  # the same interval: nothing more
    assert at(2.5) == ([aid], [], 4)  # round 1
    # Overdue 4 h: reassigned to the chair (asked to decide), and round 2 (to the chair).
    assert at(4.0) == ([aid], [aid], 2)
    assert at(4.5) == ([], [], 0)
    step = _step(sessions, aid)
    assert (step.approver_users, step.approver_roles) == (["chair"], [])
    with sessions.begin() as session:
        rows = session.execute(
            select(
                ApprovalEscalation.kind, ApprovalEscalation.round, ApprovalEscalation.notified
            ).order_by(ApprovalEscalation.id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("escalated", 0, 4), ("escalated", 1, 4), ("reassigned", 0, 0), ("escalated", 2, 1),
    ]  # fmt: skip
    with pytest.raises(PermissionDeniedError, match="'ann' may not decide"):
        _decide(sessions, aid, "ann", "approve")
    _decide(sessions, aid, "chair", "approve")
    process(sessions, settings)
    assert policy_status(sessions, pid) == "approved"
    assert at(6.5) == ([], [], 0)  # decided: escalation stops


def test_delegate_from_the_command_line(
    sessions: sessionmaker[Session], settings: Settings, db_url: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from gov_pipeline_tests.integration.engine_support import cli_invoker

    _, aid = _start(sessions, settings, quorum=2)
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", db_url)
    run = cli_invoker(capsys)
    args = ("approvals", "delegate", str(aid), "--tenant", "acme", "--user", "ann")
    assert run(*args, "--to", "dan", "--comment", "away") == (
        0, f"approval {aid}: delegated by ann to dan\n", "",
    )  # fmt: skip
    code, _, err = run(*args, "--to", "chair")
    assert code == 1 and "'ann' may not decide" in err
    code, out, _ = run("approvals", "list", "--tenant", "acme", "--user", "dan", "--json")
    (row,) = __import__("json").loads(out)
    assert (row["id"], row["quorum"], row["delegated_to"]) == (aid, 2, ["dan"])


def test_a_quorum_more_than_the_roles_holders_fails_the_action(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    from gov_pipeline_tests.integration.engine_support import count

    with pytest.raises(ValueError):  # no approval step to unpack
        _start(sessions, settings, quorum=4)
    with sessions.begin() as session:
        (execution,) = session.scalars(
            select(WorkflowExecution).where(WorkflowExecution.status == "failed")
        ).all()
        assert "Board needs 4 approvers; 3 may decide it" in str(execution.error)
    assert count(sessions, Approval) == 0


def test_a_reassignment_ends_the_delegations_and_lowers_the_quorum_to_the_target(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    pid, aid = _start(sessions, settings, quorum=2)
    with sessions.begin() as session:
        approvals.delegate(session, tenant_id="acme", approval_id=aid, user_id="ann", to_user="dan")
    due = _step(sessions, aid).due_at
    assert due is not None
    report = escalate_overdue(sessions, settings, now=due + timedelta(hours=4))
    assert report.reassigned == [aid]
    step = _step(sessions, aid)
    assert (step.approver_users, step.quorum) == (["chair"], 1)
    assert [(d["from"], d["to"], bool(d["ended"])) for d in step.delegations] == [
        ("ann", "dan", True)
    ]
    with pytest.raises(PermissionDeniedError, match="'dan' may not decide"):
        _decide(sessions, aid, "dan", "approve")
    _decide(sessions, aid, "chair", "approve")  # alone now
    process(sessions, settings)
    assert policy_status(sessions, pid) == "approved"
