"""Review reminders (on_deadline_approaching / on_deadline_passed): the window, once per
review date, conditions, failures, tenants and deleted policies — on both databases."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.models import Notification, Task, WorkflowExecution
from gov_pipeline.runners.deadlines import ReminderReport, run_review_reminders
from gov_pipeline.services import policies
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import (
    NO_WAIT,
    apply_yaml,
    count,
    make_settings,
    new_policy,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples/workflows"
REVIEW_REMINDER = (EXAMPLES / "review_reminder.yaml").read_text()
ESCALATION = (EXAMPLES / "escalation.yaml").read_text()
TODAY = date(2031, 3, 10)

DUE_SOON = """
name: Due soon
tenant_id: acme
type: deadline_reminder
trigger: on_deadline_approaching
days_before_deadline: 5
actions:
  - type: notify
    users: [olivia]
    notification_type: deadline_approaching
    title: "Review {entity.title} by {entity.next_review_date}"
"""


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
def users(sessions: sessionmaker[Session], tenant: str) -> None:
    with sessions.begin() as session:
        upsert_user(session, tenant_id="acme", user_id="carol", roles=["compliance_officer"])
        upsert_user(session, tenant_id="acme", user_id="ciso", roles=["admin"])
        upsert_user(session, tenant_id="acme", user_id="olivia", roles=["policy_owner"])
        upsert_user(session, tenant_id="globex", user_id="gina", roles=["admin"])


def remind(
    sessions: sessionmaker[Session], settings: Settings, today: date = TODAY
) -> ReminderReport:
    return run_review_reminders(
        sessions, settings, today=today, run_id="run-1", retry=NO_WAIT, sleep=lambda s: None
    )


def due(days: int | None, **fields: Any) -> dict[str, Any]:
    review = None if days is None else TODAY + timedelta(days=days)
    return {"next_review_date": review, **fields}


def executions(sessions: sessionmaker[Session]) -> list[WorkflowExecution]:
    with sessions.begin() as session:
        return list(session.scalars(select(WorkflowExecution).order_by(WorkflowExecution.id)))


def notified(sessions: sessionmaker[Session], kind: str) -> list[str]:
    with sessions.begin() as session:
        return sorted(
            session.scalars(select(Notification.user_id).where(Notification.type == kind))
        )


def test_review_reminder_reminds_once_per_review_date(
    sessions: sessionmaker[Session], settings: Settings, users: None
) -> None:
    apply_yaml(sessions, REVIEW_REMINDER)
    soon = new_policy(sessions, status="published", **due(10))
    new_policy(sessions, status="published", **due(40))  # not yet
    new_policy(sessions, status="published", **due(-1))  # passed, not approaching
    new_policy(sessions, status="published", **due(None))  # no review date

    report = remind(sessions, settings)
    assert (report.created, report.ran, report.skipped, report.failed) == (1, 1, 0, 0)
    assert report.by_workflow == {"Review reminder": 1}
    (execution,) = executions(sessions)
    assert execution.status == "completed" and execution.entity_id == str(soon)
    assert execution.change_id is None and execution.dagster_run_id == "run-1"
    assert (
        execution.dedupe_key
        == f"deadline:on_deadline_approaching:{soon}:{TODAY + timedelta(days=10)}"
    )
    assert execution.input is not None and execution.input["trigger"] == "on_deadline_approaching"
    assert execution.input["entity"]["id"] == soon and "content" not in execution.input["entity"]
    assert notified(sessions, "policy_review_required") == ["carol", "olivia"]
    with sessions.begin() as session:
        task = session.scalars(select(Task)).one()
        assert (task.title, task.assignee_id, task.entity_id) == (
            "Review policy",
            "olivia",
            str(soon),
        )

    # The schedule runs again the same day (and the next): nothing new.
    before = (count(sessions, Notification), count(sessions, Task))
    again = remind(sessions, settings)
    assert (again.created, again.ran, again.skipped) == (0, 0, 0)
    assert remind(sessions, settings, TODAY + timedelta(days=1)).created == 0
    assert (count(sessions, Notification), count(sessions, Task)) == before
    assert count(sessions, WorkflowExecution) == 1

    # A new review date is a new deadline: reminded again.
    with sessions.begin() as session:
        policies.update_policy(
            session, tenant_id="acme", policy_id=soon,
            fields={"next_review_date": TODAY + timedelta(days=20)},
        )  # fmt: skip
    report = remind(sessions, settings)
    assert (report.created, report.ran) == (1, 1)
    assert count(sessions, Task) == 2


def test_the_approaching_window_includes_both_ends(
    sessions: sessionmaker[Session], settings: Settings, users: None
) -> None:
    apply_yaml(sessions, DUE_SOON)
    inside = [new_policy(sessions, title=f"in {d}", **due(d)) for d in (0, 3, 5)]
    for d in (-1, 6):
        new_policy(sessions, title=f"out {d}", **due(d))
    report = remind(sessions, settings)
    assert (report.created, report.ran) == (3, 3)
    assert sorted(int(e.entity_id) for e in executions(sessions)) == inside
    with sessions.begin() as session:
        titles = sorted(session.scalars(select(Notification.title)))
    assert titles[0] == f"Review in 0 by {TODAY.isoformat()}"


def test_days_before_deadline_zero_means_the_day_itself(
    sessions: sessionmaker[Session], settings: Settings, users: None
) -> None:
    apply_yaml(sessions, DUE_SOON, days_before_deadline=0)
    today = new_policy(sessions, **due(0))
    new_policy(sessions, **due(1))
    assert remind(sessions, settings).created == 1
    assert [e.entity_id for e in executions(sessions)] == [str(today)]


def test_escalation_example_on_passed_review_dates_skips_archived_with_a_reason(
    sessions: sessionmaker[Session], settings: Settings, users: None
) -> None:
    apply_yaml(sessions, ESCALATION)
    overdue = new_policy(sessions, status="published", **due(-3))
    archived = new_policy(sessions, status="archived", **due(-3))
    new_policy(sessions, status="published", **due(0))  # due today: not passed yet
    report = remind(sessions, settings)
    assert (report.created, report.ran, report.skipped, report.failed) == (2, 1, 1, 0)
    by_policy = {e.entity_id: e for e in executions(sessions)}
    assert set(by_policy) == {str(overdue), str(archived)}
    assert by_policy[str(overdue)].status == "completed"
    assert by_policy[str(overdue)].assignee_id == "compliance-lead"
    skipped = by_policy[str(archived)]
    assert skipped.status == "skipped" and skipped.finished_at is not None
    assert skipped.status_reason is not None
    assert skipped.status_reason.startswith("conditions not met: ")
    assert "archived" in skipped.status_reason
    assert notified(sessions, "deadline_passed") == ["ciso"]
    with sessions.begin() as session:
        priority = session.scalars(select(Notification.priority)).one()
    assert priority == "urgent"
    # Skipped rows are remembered too: the next run neither re-creates nor re-counts them.
    again = remind(sessions, settings)
    assert (again.created, again.skipped) == (0, 0)


def test_both_triggers_side_by_side_count_per_workflow(
    sessions: sessionmaker[Session], settings: Settings, users: None
) -> None:
    apply_yaml(sessions, REVIEW_REMINDER)
    apply_yaml(sessions, ESCALATION)
    for days in (-5, -1, 2, 30):
        new_policy(sessions, status="approved", **due(days))
    report = remind(sessions, settings)
    assert report.by_workflow == {"Review reminder": 2, "Overdue review escalation": 2}
    assert (report.created, report.ran) == (4, 4)


def test_tenant_isolation(sessions: sessionmaker[Session], settings: Settings, users: None) -> None:
    apply_yaml(sessions, DUE_SOON)
    mine = new_policy(sessions, **due(1))
    theirs = new_policy(sessions, tenant="globex", **due(1))
    assert remind(sessions, settings).created == 1
    assert [(e.tenant_id, e.entity_id) for e in executions(sessions)] == [("acme", str(mine))]
    # globex's own workflow reminds only globex's policy.
    apply_yaml(sessions, DUE_SOON, tenant_id="globex", actions=[
        {"type": "notify", "roles": ["admin"], "title": "Review due"},
    ])  # fmt: skip
    assert remind(sessions, settings).created == 1
    assert [(e.tenant_id, e.entity_id) for e in executions(sessions)][1] == ("globex", str(theirs))
    assert notified(sessions, "general") == ["gina"]


def test_deleted_policies_and_inactive_workflows_are_ignored(
    sessions: sessionmaker[Session], settings: Settings, users: None
) -> None:
    apply_yaml(sessions, DUE_SOON)
    apply_yaml(sessions, DUE_SOON, name="Switched off", status="inactive")
    gone = new_policy(sessions, **due(2))
    with sessions.begin() as session:
        policies.soft_delete_policy(session, tenant_id="acme", policy_id=gone)
    report = remind(sessions, settings)
    assert (report.created, report.by_workflow) == (0, {"Due soon": 0})
    assert count(sessions, WorkflowExecution) == 0


def test_a_failing_action_fails_the_execution_and_the_run_goes_on(
    sessions: sessionmaker[Session], settings: Settings, users: None
) -> None:
    # draft -> approved is not a legal move: the action fails for good (not retried).
    apply_yaml(sessions, DUE_SOON, actions=[{"type": "change_status", "to": "approved"}])
    broken = new_policy(sessions, **due(1))
    fine = new_policy(sessions, status="in_review", **due(1))
    report = remind(sessions, settings)
    assert (report.created, report.ran, report.failed) == (2, 1, 1)
    status = {e.entity_id: e.status for e in executions(sessions)}
    assert status == {str(broken): "failed", str(fine): "completed"}
    # A failed reminder is not retried by the next run of the schedule.
    assert remind(sessions, settings).created == 0
