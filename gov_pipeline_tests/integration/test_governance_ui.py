"""Governance where the Dagster UI shows it, run in process on both databases: the outcome of
every run (tags, ERROR events, a failed run when a workflow failed), the governance assets
and their checks, the refresh sensor, and the operator jobs (decide, retry, cancel) with the
same checks as the CLI. The browser tests (e2e/test_ui.py) look at the same through the UI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.checks.verify import verify
from gov_pipeline.config import load_settings
from gov_pipeline.db.models import (
    Approval,
    EntityChange,
    Notification,
    WorkflowExecution,
)
from gov_pipeline.orchestration.governance import (
    BACKLOG,
    CHANGES,
    OUTCOMES,
    REGISTER,
    governance_state,
    refresh_sensor,
)
from gov_pipeline.orchestration.operator_jobs import (
    cancel_execution_job,
    decide_approval,
    retry_executions_job,
)
from gov_pipeline.orchestration.processing import process_changes
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import (
    APPROVAL_EXAMPLE,
    apply_yaml,
    make_settings,
    move,
    new_policy,
    policy_status,
    webhook_server,
)

HOOK = """
name: finance hook
tenant_id: acme
type: notification
trigger: on_status_change
owner_id: wanda
conditions: {all: [{field: new.status, op: changed_to, value: in_review},
                   {field: policy_type, op: eq, value: Finance}]}
actions: [{type: webhook, url: "URL", max_attempts: 2}]
"""


@pytest.fixture
def env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The processes' environment: webhooks may go only to 127.0.0.2 (so 127.0.0.1 is
    refused); no test-wide secret besides the tests' one."""
    settings = make_settings(db_url)
    values = {
        "GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.2",
        "GOV_PIPELINE_WEBHOOK_SECRET": settings.webhook_secret or "",
        "GOV_PIPELINE_WEBHOOK_RETRY_DELAY": "0.01",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def people(sessions: sessionmaker[Session], tenant: str) -> None:
    with sessions.begin() as session:
        for user, role in (("carol", "compliance_officer"), ("ciso", "admin"),
                           ("olivia", "policy_owner"), ("mallory", "viewer")):  # fmt: skip
            upsert_user(session, tenant_id="acme", user_id=user, roles=[role])


def _process(db_url: str, instance: dg.DagsterInstance, change_ids: list[int]) -> Any:
    return process_changes.execute_in_process(
        run_config={"ops": {"load_changes": {"config": {"change_ids": change_ids}}}},
        resources={"database": DatabaseResource(url=db_url)},
        instance=instance,
        raise_on_error=False,
    )


def _changes(sessions: sessionmaker[Session]) -> list[int]:
    with sessions.begin() as session:
        return [c.id for c in session.query(EntityChange).order_by(EntityChange.id)]


def _logged_errors(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    records = instance.all_logs(run_id)
    return [r.user_message for r in records if r.level >= 40]


def test_a_failed_workflow_fails_its_run_with_the_reason_and_tags_it(
    db_url: str, sessions: sessionmaker[Session], env: dict[str, str], people: None
) -> None:
    apply_yaml(sessions, HOOK.replace("URL", "http://127.0.0.1:9/hook"))
    fine = new_policy(sessions, title="Access control")
    bad = new_policy(sessions, title="Budget", policy_type="Finance")
    move(sessions, fine, "in_review")
    move(sessions, bad, "in_review")
    with dg.instance_for_test() as instance:
        ok = _process(db_url, instance, _changes(sessions)[:1])  # a creation: nothing to run
        failed = _process(db_url, instance, _changes(sessions))
        assert ok.success and not failed.success
        assert instance.get_run_by_id(ok.run_id).tags["gov/outcome"] == "ok"  # type: ignore[union-attr]
        tags = instance.get_run_by_id(failed.run_id).tags  # type: ignore[union-attr]
        assert tags["gov/outcome"] == "failed"
        assert "finance hook" in tags["gov/workflows"] and tags["gov/executions"] != "-"
        errors = _logged_errors(instance, failed.run_id)
        (execution_id,) = [e.id for e in _executions(sessions) if e.status == "failed"]
        line = next(m for m in errors if m.startswith(f"execution {execution_id} "))
        assert "of workflow 'finance hook' on policy" in line
        assert "host '127.0.0.1:9' is not allow-listed" in line
        # Filterable as the Runs page filters (tags), and the Failed tab (status).
        found = instance.get_runs(dg.RunsFilter(tags={"gov/outcome": "failed"}))
        assert [r.run_id for r in found] == [failed.run_id]
        assert found[0].status == dg.DagsterRunStatus.FAILURE


def _executions(sessions: sessionmaker[Session]) -> list[WorkflowExecution]:
    with sessions.begin() as session:
        return list(session.query(WorkflowExecution).order_by(WorkflowExecution.id))


def _refresh(db_url: str, instance: dg.DagsterInstance) -> dict[str, Any]:
    result = dg.materialize(
        [governance_state], resources={"database": DatabaseResource(url=db_url)},
        instance=instance,
    )  # fmt: skip
    assert result.success
    metadata = {
        e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    return {"metadata": metadata, "checks": checks}


def test_the_outcomes_check_is_red_until_a_retry_succeeds(
    db_url: str, sessions: sessionmaker[Session], env: dict[str, str], people: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    with webhook_server([200]) as (url, received), dg.instance_for_test() as instance:
        apply_yaml(sessions, HOOK.replace("URL", url))
        move(sessions, new_policy(sessions, title="Budget", policy_type="Finance"), "in_review")
        assert not _process(db_url, instance, _changes(sessions)).success
        red = _refresh(db_url, instance)["checks"]["no_unresolved_failed_executions"]
        assert not red.passed and red.severity == dg.AssetCheckSeverity.ERROR
        (failed,) = [e for e in _executions(sessions) if e.status == "failed"]
        assert f"execution {failed.id} (finance hook on policy" in (red.description or "")
        assert "retry them" in (red.description or "")
        # The operator allows the host (a restart of the processes), then retries.
        monkeypatch.setenv("GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
        retried = retry_executions_job.execute_in_process(
            run_config={"ops": {"retry": {"config": {"tenant_id": "acme"}}}},
            resources={"database": DatabaseResource(url=db_url)},
            instance=instance,
        )
        assert retried.success
        assert instance.get_run_by_id(retried.run_id).tags["gov/outcome"] == "ok"  # type: ignore[union-attr]
        assert len(received.bodies) == 1
        green = _refresh(db_url, instance)["checks"]["no_unresolved_failed_executions"]
        assert green.passed
    # The owner's notice of the first failure stays whole (its notification keeps its
    # action run: a retry once deleted it, and verify found an orphan notification).
    with sessions.begin() as session:
        report = verify(session, grace_s=0)
    assert report.get("effects_once").ok, report.get("effects_once").examples


def test_a_retry_that_fails_again_tells_the_owner_again(
    db_url: str, sessions: sessionmaker[Session], env: dict[str, str], people: None
) -> None:
    apply_yaml(sessions, HOOK.replace("URL", "http://127.0.0.1:9/hook"))
    move(sessions, new_policy(sessions, title="Budget", policy_type="Finance"), "in_review")
    with dg.instance_for_test() as instance:
        assert not _process(db_url, instance, _changes(sessions)).success
        again = retry_executions_job.execute_in_process(
            run_config={"ops": {"retry": {"config": {"tenant_id": "acme"}}}},
            resources={"database": DatabaseResource(url=db_url)},
            instance=instance, raise_on_error=False,
        )  # fmt: skip
        assert not again.success
        assert instance.get_run_by_id(again.run_id).tags["gov/outcome"] == "failed"  # type: ignore[union-attr]
    with sessions.begin() as session:
        notices = session.scalars(select(Notification).where(Notification.user_id == "wanda")).all()
        report = verify(session, grace_s=0)
    assert len(notices) == 2  # one per failure
    assert report.get("effects_once").ok, report.get("effects_once").examples


def test_the_assets_show_the_register_the_backlog_and_the_lag(
    db_url: str, sessions: sessionmaker[Session], env: dict[str, str], people: None
) -> None:
    apply_yaml(sessions, APPROVAL_EXAMPLE)
    pid = new_policy(sessions)
    new_policy(sessions, title="Other", policy_type="Privacy")
    move(sessions, pid, "in_review")
    with dg.instance_for_test() as instance:
        assert _process(db_url, instance, _changes(sessions)).success
        with sessions.begin() as session:  # the first step waits for 3 hours, past due
            session.execute(
                update(Approval)
                .where(Approval.status == "pending")
                .values(
                    requested_at=datetime.now(UTC) - timedelta(hours=3),
                    due_at=datetime.now(UTC) - timedelta(hours=1),
                )
            )
        new_policy(sessions, title="Unprocessed")  # its change is left unprocessed
        with sessions.begin() as session:
            last = max(_changes(sessions))
            session.execute(
                update(EntityChange)
                .where(EntityChange.id == last)
                .values(created_at=datetime.now(UTC) - timedelta(hours=2))
            )
        state = _refresh(db_url, instance)
    register = state["metadata"][REGISTER]
    assert register["policies"].value == 3
    assert register["status draft"].value == 2 and register["status in_review"].value == 1
    assert register["policies [acme]"].value == 3
    backlog = state["metadata"][BACKLOG]
    assert backlog["waiting_steps"].value == 1 and backlog["overdue_steps"].value == 1
    (row,) = backlog["backlog"].value.records
    assert row.data["approvers"] == "roles compliance_officer"
    assert row.data["workflow"] == "Policy approval" and row.data["age"] == "3.0 h"
    assert row.data["overdue"] == "yes" and row.data["entity"] == f"policy {pid}"
    overdue = state["checks"]["no_overdue_approvals"]
    assert not overdue.passed and "has waited 3.0 h for roles compliance_officer" in (
        overdue.description or ""
    )
    changes = state["metadata"][CHANGES]
    assert changes["unprocessed_changes"].value == 1
    assert changes["oldest_change_age_s"].value >= 7000
    lag = state["checks"]["change_lag_under_threshold"]
    assert not lag.passed and "over the 300 s threshold" in (lag.description or "")
    outcomes = state["metadata"][OUTCOMES]
    assert outcomes["executions awaiting_approval"].value == 1
    assert outcomes["unresolved_failed"].value == 0


def test_deciding_from_the_launchpad_continues_the_flow_and_refuses_a_non_approver(
    db_url: str, sessions: sessionmaker[Session], env: dict[str, str], people: None
) -> None:
    apply_yaml(sessions, APPROVAL_EXAMPLE)
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    with dg.instance_for_test() as instance:
        assert _process(db_url, instance, _changes(sessions)).success

        def decide(approval: int, user: str) -> Any:
            config = {"tenant_id": "acme", "approval_id": approval, "decision": "approve",
                      "user_id": user, "comment": "ok"}  # fmt: skip
            return decide_approval.execute_in_process(
                run_config={"ops": {"decide": {"config": config}}},
                resources={"database": DatabaseResource(url=db_url)},
                instance=instance, raise_on_error=False,
            )  # fmt: skip

        first, second = _steps(sessions)
        assert decide(first, "carol").success
        refused = decide(second, "mallory")
        assert not refused.success
        failure = refused.get_step_failure_events()[0]
        assert "user 'mallory' may not decide approval" in str(failure.step_failure_data.error)
        assert policy_status(sessions, pid) == "in_review"
        done = decide(second, "ciso")
        assert done.success
        assert instance.get_run_by_id(done.run_id).tags["gov/outcome"] == "ok"  # type: ignore[union-attr]
    assert policy_status(sessions, pid) == "approved"


def _steps(sessions: sessionmaker[Session]) -> list[int]:
    with sessions.begin() as session:
        return [a.id for a in session.query(Approval).order_by(Approval.step_index)]


def test_cancelling_from_the_launchpad_withdraws_the_waiting_steps(
    db_url: str, sessions: sessionmaker[Session], env: dict[str, str], people: None
) -> None:
    apply_yaml(sessions, APPROVAL_EXAMPLE)
    move(sessions, new_policy(sessions), "in_review")
    with dg.instance_for_test() as instance:
        assert _process(db_url, instance, _changes(sessions)).success
        (waiting,) = [e for e in _executions(sessions) if e.status == "awaiting_approval"]
        config = {"tenant_id": "acme", "execution_id": waiting.id, "user_id": "olivia",
                  "reason": "superseded"}  # fmt: skip
        result = cancel_execution_job.execute_in_process(
            run_config={"ops": {"cancel": {"config": config}}},
            resources={"database": DatabaseResource(url=db_url)},
            instance=instance,
        )
        assert result.success
    (cancelled,) = [e for e in _executions(sessions) if e.id == waiting.id]
    assert cancelled.status == "cancelled" and "superseded" in (cancelled.status_reason or "")
    with sessions.begin() as session:
        statuses = {a.status for a in session.query(Approval)}
    assert statuses == {"withdrawn"}


def test_the_refresh_sensor_follows_the_runs_that_change_the_state(
    db_url: str, sessions: sessionmaker[Session], env: dict[str, str], tenant: str
) -> None:
    sensor = refresh_sensor(load_settings(), [process_changes.name])
    with dg.instance_for_test() as instance:

        def tick(cursor: str | None) -> dg.SensorResult:
            with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
                result = sensor(context)
            assert isinstance(result, dg.SensorResult)
            return result

        first = tick(None)  # nothing known yet: refresh once
        assert len(first.run_requests or []) == 1
        idle = tick(first.cursor)
        assert not idle.run_requests and idle.skip_reason is not None
        assert "No run of process_changes ended since" in idle.skip_reason.skip_message
        new_policy(sessions)
        assert _process(db_url, instance, _changes(sessions)).success
        after = tick(first.cursor)
        assert len(after.run_requests or []) == 1
