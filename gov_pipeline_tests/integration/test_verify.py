"""The invariant checker: all hold after normal processing, and each one catches a breach
made on purpose (a deleted marker, a duplicate, a reordered start, a stuck execution, a run
Redis lost), from the service and from `gov-pipeline verify`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.checks.verify import VerifyReport, lost_and_duplicated, verify
from gov_pipeline.db.engine import make_engine, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS, APP_ROLE
from gov_pipeline.db.models import (
    ActionRun,
    ChangeSkip,
    EntityChange,
    Notification,
    ProcessedChange,
    Task,
    WebhookDelivery,
    WorkflowExecution,
)
from gov_pipeline_tests.conftest import _truncate_all
from gov_pipeline_tests.integration.engine_support import (
    apply_yaml,
    cli_invoker,
    make_settings,
    move,
    new_policy,
    process,
)

REVIEW_AND_APPROVE = """
name: review and approve
tenant_id: acme
type: status_change
trigger: on_status_change
owner_id: wanda
conditions: {field: new.status, op: changed_to, value: in_review}
actions:
  - {type: notify, include_owner: true, title: "Review {entity.title}"}
  - {type: create_task, title: "Review {entity.title}", assignee: owner}
  - {type: change_status, to: approved}
"""


def _processed(sessions: sessionmaker[Session], url: str) -> None:
    """Two policies, each moved to review twice-over: executions, effects, a chain."""
    settings = make_settings(url)
    apply_yaml(sessions, REVIEW_AND_APPROVE)
    for title in ("Access", "Backup"):
        pid = new_policy(sessions, title=title)
        move(sessions, pid, "in_review")
    process(sessions, settings)
    for pid in (1, 2):
        move(sessions, pid, "in_review")  # approved -> in_review: a second execution each
    process(sessions, settings)


def _check(sessions: sessionmaker[Session], **kwargs: Any) -> VerifyReport:
    kwargs.setdefault("grace_s", 0)
    with sessions.begin() as session:
        return verify(session, **kwargs)


def _one_execution(session: Session, n: int = 0) -> WorkflowExecution:
    return list(
        session.scalars(
            select(WorkflowExecution)
            .where(WorkflowExecution.status == "completed")
            .order_by(WorkflowExecution.id)
        )
    )[n]


@pytest.fixture
def done(db_url: str, sessions: sessionmaker[Session], tenant: str) -> sessionmaker[Session]:
    _processed(sessions, db_url)
    report = _check(sessions)
    assert report.ok, report.summary()
    f = report.figures
    # 2 created + 2x(in_review, approved) x2 = 10 policy changes, and the 4 tasks the
    # executions created (a task is a governed entity); 4 completed executions.
    assert f["changes"] == 14 and f["processed"] == 14
    assert f["changes_by_entity_type"] == {
        "policy": 10, "risk": 0, "compliance_requirement": 0, "task": 4, "sop": 0,
        "policy_exception": 0,
    }  # fmt: skip
    assert f["records_by_entity_type"]["policy"] == 2 and f["records_by_entity_type"]["task"] == 4
    assert (
        f["executions_by_status"]["completed"] == 4 and f["notifications"] == 8
    )  # notice + task_assigned
    assert f["tasks"] == 4 and report.get("per_entity_order").checked == 4
    return sessions


def test_all_invariants_hold_after_normal_processing(done: sessionmaker[Session]) -> None:
    report = _check(done)
    assert [i.name for i in report.invariants] == [
        "changes_processed", "one_execution_per_change", "effects_once", "per_entity_order",
        "lifecycle_followed", "no_stuck_executions",
    ]  # fmt: skip
    assert all(i.checked > 0 for i in report.invariants)
    assert lost_and_duplicated(report) == (0, 0)
    assert report.to_dict()["ok"] is True


def test_a_change_without_its_processed_marker_is_lost_unless_within_grace(
    done: sessionmaker[Session],
) -> None:
    with done.begin() as session:
        session.execute(delete(ProcessedChange).where(ProcessedChange.change_id == 3))
    report = _check(done)
    result = report.get("changes_processed")
    assert (result.violations, result.examples[0]["change_id"]) == (1, 3)
    assert lost_and_duplicated(report) == (1, 0)
    assert _check(done, grace_s=3600).get("changes_processed").ok  # committed just now
    assert _check(done, tenant="globex").ok  # another tenant's view holds


def test_a_second_execution_of_one_workflow_for_one_change(done: sessionmaker[Session]) -> None:
    with done.begin() as session:
        first = _one_execution(session)
        session.add(
            WorkflowExecution(
                tenant_id=first.tenant_id, workflow_id=first.workflow_id,
                workflow_version=first.workflow_version, dedupe_key="replayed",
                change_id=first.change_id, entity_type=first.entity_type,
                entity_id=first.entity_id, status="completed",
            )
        )  # fmt: skip
    report = _check(done)
    assert report.get("one_execution_per_change").violations == 1
    assert report.get("one_execution_per_change").examples[0]["executions"] == 2
    assert lost_and_duplicated(report)[1] == 1


def test_a_workflow_both_skipped_and_run_for_one_change(done: sessionmaker[Session]) -> None:
    """A skip row naming a workflow that also has an execution for the change: decided
    twice, a duplicate (the compact skips are checked against the executions)."""
    before = _check(done).figures
    with done.begin() as session:
        first = _one_execution(session)
        assert first.change_id is not None
        session.add(
            ChangeSkip(
                change_id=first.change_id, tenant_id=first.tenant_id, skipped=1,
                workflows=[{"workflow_id": first.workflow_id, "workflow_version": 1,
                            "reason": "conditions not met: x"}],
            )
        )  # fmt: skip
    report = _check(done)
    result = report.get("one_execution_per_change")
    assert result.violations == 1
    assert result.examples[0] == {
        "workflow_id": first.workflow_id, "change_id": first.change_id, "executions": 1,
        "also_skipped": True,
    }  # fmt: skip
    assert lost_and_duplicated(report)[1] == 1
    skipped = before["executions_by_status"].get("skipped", 0)
    assert report.figures["executions_by_status"]["skipped"] == skipped + 1
    assert report.figures["change_skips"] == before["change_skips"] + 1


def test_an_effect_whose_action_run_vanished_and_an_extra_status_change(
    done: sessionmaker[Session],
) -> None:
    with done.begin() as session:
        execution = _one_execution(session)
        notify_run = session.scalars(
            select(ActionRun).where(
                ActionRun.execution_id == execution.id, ActionRun.action_type == "notify"
            )
        ).one()
        session.delete(notify_run)
        # The same execution moved the policy a second time: one change_status, two moves.
        session.add(
            EntityChange(
                tenant_id="acme", entity_type="policy", entity_id=execution.entity_id,
                kind="status_changed", old_values={"status": "approved"},
                new_values={"status": "in_review"}, changed_fields=["status"],
                caused_by_execution_id=execution.id, chain_depth=1,
            )
        )  # fmt: skip
    report = _check(done, grace_s=3600)  # the new change is not due yet
    effects = report.get("effects_once")
    assert effects.by_kind == {"orphan_notification": 1, "extra_status_change": 1}
    assert lost_and_duplicated(report) == (0, 1)


@pytest.mark.parametrize(
    ("entity_type", "source", "target"),
    [("risk", "identified", "monitored"), ("task", "cancelled", "todo"),
     ("policy_exception", "rejected", "approved"), ("policy", "draft", "published")],
)  # fmt: skip
def test_a_status_change_the_lifecycle_forbids_is_caught_unless_overridden(
    done: sessionmaker[Session], entity_type: str, source: str, target: str
) -> None:
    def move(override: str | None) -> EntityChange:
        return EntityChange(
            tenant_id="acme", entity_type=entity_type, entity_id="99", kind="status_changed",
            old_values={"status": source}, new_values={"status": target},
            changed_fields=["status"], lifecycle_override=override,
        )  # fmt: skip

    with done.begin() as session:
        session.add_all([move(None), move("data repair: ticket 12")])
    result = _check(done, grace_s=3600).get("lifecycle_followed")
    assert result.violations == 1
    (example,) = result.examples
    assert (example["kind"], example["entity_type"], example["from"], example["to"]) == (
        "illegal_move", entity_type, source, target,
    )  # fmt: skip


def test_started_out_of_change_order(done: sessionmaker[Session]) -> None:
    with done.begin() as session:
        earlier = session.scalars(
            select(WorkflowExecution)
            .where(WorkflowExecution.entity_id == "1", WorkflowExecution.status == "completed")
            .order_by(WorkflowExecution.change_id)
        ).first()
        assert earlier is not None and earlier.started_at is not None
        earlier.started_at = earlier.started_at + timedelta(hours=1)
    result = _check(done).get("per_entity_order")
    assert result.violations == 1 and result.examples[0]["entity_id"] == "1"


def test_an_execution_stuck_in_progress_or_pending_after_its_change(
    done: sessionmaker[Session],
) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    with done.begin() as session:
        a, b = _one_execution(session, 0), _one_execution(session, 1)
        session.execute(
            update(WorkflowExecution)
            .where(WorkflowExecution.id == a.id)
            .values(status="in_progress", updated_at=long_ago)
        )
        session.execute(
            update(WorkflowExecution)
            .where(WorkflowExecution.id == b.id)
            .values(status="pending", updated_at=long_ago)
        )
        session.execute(
            update(ProcessedChange)
            .where(ProcessedChange.change_id == b.change_id)
            .values(processed_at=long_ago)
        )
    result = _check(done).get("no_stuck_executions")
    assert result.by_kind == {"in_progress": 1, "pending_after_processed": 1}
    assert _check(done, stuck_s=3 * 3600).get("no_stuck_executions").ok


@pytest.fixture
def pg_done(postgres_url: str) -> Iterator[sessionmaker[Session]]:
    _truncate_all(postgres_url)
    # The owner: the test drops unique keys (inside a transaction it rolls back).
    engine = make_engine(postgres_url)
    sessions = make_sessionmaker(engine, tenant=ALL_TENANTS)
    from gov_pipeline.services.tenants import create_tenant

    with sessions.begin() as session:
        create_tenant(session, tenant_id="acme", name="Acme")
    _processed(sessions, postgres_url)
    yield sessions
    engine.dispose()


@pytest.mark.parametrize(
    ("table", "constraint", "kind"),
    [
        ("notifications", "uq_notifications_action_user", "duplicate_notification"),
        ("tasks", "uq_tasks_action_run_id", "duplicate_task"),
        ("webhook_deliveries", "uq_webhook_deliveries_action_run_id", "duplicate_webhook_delivery"),
        ("action_runs", "uq_action_runs_step", "duplicate_action_run"),
    ],
)
def test_a_duplicated_effect_is_caught_even_without_its_unique_key(
    pg_done: sessionmaker[Session], table: str, constraint: str, kind: str
) -> None:
    """The unique keys forbid these rows; the checker must not rely on them. On PostgreSQL
    the key is dropped inside a transaction that is rolled back afterwards."""
    session = pg_done()
    try:
        session.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}"))
        execution = _one_execution(session)
        run = session.scalars(
            select(ActionRun).where(ActionRun.execution_id == execution.id).order_by(ActionRun.id)
        ).first()
        assert run is not None
        if table == "notifications":
            original = session.scalars(
                select(Notification).where(Notification.action_run_id.is_not(None))
            ).first()
            assert original is not None
            session.add(Notification(tenant_id="acme", user_id=original.user_id, type="general",
                                     title="again", action_run_id=original.action_run_id))  # fmt: skip
        elif table == "tasks":
            original_task = session.scalars(select(Task)).first()
            assert original_task is not None
            session.add(Task(tenant_id="acme", title="again",
                             action_run_id=original_task.action_run_id))  # fmt: skip
        elif table == "webhook_deliveries":
            for _ in range(2):
                session.add(WebhookDelivery(tenant_id="acme", execution_id=execution.id,
                                            action_run_id=run.id, url="http://127.0.0.1/h",
                                            payload={}))  # fmt: skip
        else:
            session.add(ActionRun(tenant_id="acme", execution_id=execution.id,
                                  step_key=run.step_key, action_type=run.action_type))  # fmt: skip
        session.flush()
        # (A task's insert is a change: within the grace window, not yet lost.)
        report = verify(session, grace_s=60)
        assert report.get("effects_once").by_kind == {kind: 1}
        assert lost_and_duplicated(report) == (0, 1)
    finally:
        session.rollback()
        session.close()
    with pg_done.begin() as check:
        assert verify(check, grace_s=0).ok  # rolled back: the key and the data are intact


def test_gov_pipeline_verify_exit_codes_json_and_one_line_errors(
    db_url: str,
    done: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    run = cli_invoker(capsys)
    code, out, err = run("verify", "--grace", "0", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["ok"] is True and (data["lost"], data["duplicated"]) == (0, 0)
    assert data["figures"]["changes"] == 14
    code, out, _ = run("verify", "--grace", "0")
    assert code == 0 and "changes_processed" in out and "lost 0, duplicated 0" in out
    assert "records (changes) by entity type: policy 2 (10), risk 0 (0)" in out
    assert "task 4 (4)" in out
    with done.begin() as session:
        session.execute(delete(ProcessedChange).where(ProcessedChange.change_id.in_([3, 4])))
    code, out, err = run("verify", "--grace", "0", "-t", "acme")
    assert code == 1, out + err
    assert err.strip() == "error: invariants violated: changes_processed (2)"
    assert run("verify", "--grace", "3600")[0] == 0
    code, _, err = run("verify", "--grace", "-1")
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.redis
def test_runs_must_be_ended_or_held_in_redis(
    tmp_path: Path,
    postgres_url: str,
    dagster_storage_url: str,
    redis_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dagster import DagsterEvent, DagsterEventType

    from gov_pipeline.checks.runs import verify_with_runs
    from gov_pipeline_tests.conftest import REDIS_URL
    from gov_pipeline_tests.integration.coordinator_support import coordinated_instance

    _truncate_all(postgres_url)
    with coordinated_instance(
        tmp_path, postgres_url, dagster_storage_url, REDIS_URL, redis_prefix
    ) as c:
        engine = make_engine(postgres_url, role=APP_ROLE)
        sessions = make_sessionmaker(engine, tenant=ALL_TENANTS)
        try:
            waiting, started = c.submit([("execute_workflow", c.config(), {})] * 2)
            queue = c.instance.run_coordinator.queue

            def runs_check() -> Any:
                with sessions.begin() as session:
                    report = verify_with_runs(session, c.instance, grace_s=0)
                return report.get("dagster_runs"), report

            result, report = runs_check()
            assert (
                result.ok
                and result.checked == 2
                and report.figures["runs_by_status"] == {"QUEUED": 2}
            )
            # A worker started `started`, then its lease expired.
            run = c.instance.get_run_by_id(started)
            assert run is not None
            for event in (DagsterEventType.PIPELINE_STARTING, DagsterEventType.PIPELINE_START):
                c.instance.report_dagster_event(
                    DagsterEvent(event_type_value=event.value, job_name=run.job_name),
                    run_id=started,
                )
            result, _ = runs_check()
            assert [e["run_id"] for e in result.examples] == [started]
            assert "no live lease" in result.examples[0]["problem"]
            # The CLI reads DAGSTER_HOME (set by coordinated_instance) and checks runs too.
            with sessions.begin() as session:  # (the policy's creation: not at issue here)
                session.add(ProcessedChange(change_id=1, tenant_id="acme"))
            code, out, err = cli_invoker(capsys)("verify", "--grace", "0", "--json")
            assert code == 1 and err.strip() == "error: invariants violated: dagster_runs (1)"
            assert json.loads(out)["figures"]["runs_by_status"] == {"QUEUED": 1, "STARTED": 1}
            assert queue.adopt(started, "w1", 60) is not None  # a live lease
            assert runs_check()[0].ok
            # Redis lost the waiting run (flushed): QUEUED in Dagster, not in line.
            queue.client.delete(queue.keys.run(waiting), queue.keys.queued("policy"))
            result, _ = runs_check()
            assert [e["run_id"] for e in result.examples] == [waiting]
            assert "not in line" in result.examples[0]["problem"]
        finally:
            engine.dispose()
