"""Escalation of overdue approval steps: who is told, once, and which steps are left alone —
on both databases."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.models import Approval, Notification
from gov_pipeline.runners.escalation import escalate_one, escalate_overdue
from gov_pipeline.services import approvals
from gov_pipeline_tests.integration.engine_support import (
    count,
    make_settings,
    process,
    start_example_approval,
)

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "examples/workflows/policy_approval.yaml"
).read_text()
LATE = timedelta(minutes=1)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
def flow(sessions: sessionmaker[Session], tenant: str, settings: Settings) -> int:
    """The example two-step sequential approval, started on one policy."""
    return start_example_approval(sessions, settings, (("globex", "gina", "admin"),))


def steps(sessions: sessionmaker[Session]) -> list[Approval]:
    with sessions.begin() as session:
        return list(session.scalars(select(Approval).order_by(Approval.step_index)))


def overdue_notices(sessions: sessionmaker[Session]) -> list[Notification]:
    with sessions.begin() as session:
        query = select(Notification).where(Notification.type == "deadline_passed")
        return list(session.scalars(query.order_by(Notification.user_id)))


def test_an_overdue_step_is_escalated_once_to_owner_admins_and_approvers(
    sessions: sessionmaker[Session], settings: Settings, flow: int
) -> None:
    first, second = steps(sessions)
    assert first.due_at is not None and second.due_at is None  # step 2 not reached yet
    now = first.due_at + LATE

    report = escalate_overdue(sessions, settings, now=now)
    assert report.escalated == [first.id] and report.notified == 3
    notices = overdue_notices(sessions)
    # Workflow owner, the tenant's admin, the step's approver (by role); not globex's admin.
    assert [n.user_id for n in notices] == ["carol", "ciso", "compliance-lead"]
    due = first.due_at.strftime("%Y-%m-%d %H:%M UTC")
    assert {n.title for n in notices} == {
        f"Overdue approval: Policy approval step 1 for policy {flow} (due {due})"
    }
    assert {(n.priority, n.tenant_id, n.entity_id, n.action_run_id) for n in notices} == {
        ("urgent", "acme", str(flow), None)
    }
    assert steps(sessions)[0].escalated_at == now

    # The next run of the schedule, and a late second escalator: nothing more.
    total = count(sessions, Notification)
    again = escalate_overdue(sessions, settings, now=now + timedelta(hours=1))
    assert (again.escalated, again.notified) == ([], 0)
    with sessions.begin() as session:
        assert escalate_one(session, first.id, now) is None
    assert count(sessions, Notification) == total
    assert steps(sessions)[0].status == "pending"  # escalation decides nothing


def test_a_step_not_yet_due_is_not_escalated(
    sessions: sessionmaker[Session], settings: Settings, flow: int
) -> None:
    first, _ = steps(sessions)
    assert first.due_at is not None
    for now in (first.due_at - LATE, first.due_at):
        report = escalate_overdue(sessions, settings, now=now)
        assert (report.escalated, report.notified) == ([], 0)
    assert overdue_notices(sessions) == []
    assert all(step.escalated_at is None for step in steps(sessions))


def test_a_decided_step_is_not_escalated_and_the_next_one_is(
    sessions: sessionmaker[Session], settings: Settings, flow: int
) -> None:
    first, _ = steps(sessions)
    with sessions.begin() as session:
        approvals.decide(
            session, tenant_id="acme", approval_id=first.id, user_id="carol", decision="approve"
        )
    process(sessions, settings)
    first, second = steps(sessions)
    assert (first.status, second.status) == ("approved", "pending")
    assert first.due_at is not None and second.due_at is not None

    report = escalate_overdue(sessions, settings, now=max(first.due_at, second.due_at) + LATE)
    assert report.escalated == [second.id]
    # ciso is both the step's approver and an admin: told once.
    assert [n.user_id for n in overdue_notices(sessions)] == ["ciso", "compliance-lead"]
    assert report.notified == 2
    first, second = steps(sessions)
    assert first.escalated_at is None and second.escalated_at is not None


def test_a_naive_now_is_taken_as_utc(
    sessions: sessionmaker[Session], settings: Settings, flow: int
) -> None:
    first, _ = steps(sessions)
    assert first.due_at is not None
    naive = (first.due_at + LATE).replace(tzinfo=None)
    assert isinstance(naive, datetime) and naive.tzinfo is None
    assert escalate_overdue(sessions, settings, now=naive).escalated == [first.id]
