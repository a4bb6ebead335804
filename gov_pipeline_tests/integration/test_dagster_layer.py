"""The Dagster layer against real databases: the sensor as a scenario table, the jobs run
in process. (Daemon, webserver and worker processes are exercised in the e2e tests.)"""

from __future__ import annotations

import uuid
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import load_settings
from gov_pipeline.db.models import EntityChange, Notification, ProcessedChange, WorkflowExecution
from gov_pipeline.definitions import defs
from gov_pipeline.domain.errors import CursorMismatchError
from gov_pipeline.orchestration.manual import execute_workflow
from gov_pipeline.orchestration.processing import process_changes
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.orchestration.sensors import change_sensor, run_failure_sensor
from gov_pipeline.services.changes import ChangeCursor
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import (
    apply_yaml,
    count,
    make_settings,
    move,
    new_policy,
    restore_to_before,
)

NOTICE = """
name: review notice
tenant_id: acme
type: notification
trigger: on_status_change
priority: 7
owner_id: wanda
conditions: {field: new.status, op: changed_to, value: in_review}
actions:
  - {type: notify, include_owner: true, title: "Review {entity.title}"}
  - {type: create_task, title: "Review", assignee: owner}
"""


@pytest.fixture
def database(
    db_url: str, sessions: sessionmaker[Session], tenant: str, monkeypatch: pytest.MonkeyPatch
) -> DatabaseResource:
    make_settings(db_url)  # clears the compiled-definition cache
    monkeypatch.setenv("GOV_PIPELINE_BATCH_THRESHOLD", "3")
    monkeypatch.setenv("GOV_PIPELINE_BATCH_SIZE", "4")
    with sessions.begin() as session:
        upsert_user(session, tenant_id="acme", user_id="carol", roles=["compliance_officer"])
    apply_yaml(sessions, NOTICE)
    return DatabaseResource(url=db_url)


def output_metadata(result: Any, step: str) -> dict[str, Any]:
    for event in result.all_events:
        if event.event_type_value == "STEP_OUTPUT" and event.step_key == step:
            return dict(event.event_specific_data.metadata)
    raise AssertionError(f"no output from {step}")


def tick(database: DatabaseResource, cursor: str | None) -> dg.SensorResult:
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"database": database}
        ) as context,
    ):
        result = change_sensor(load_settings())(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_the_definitions_load() -> None:
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {
        "process_changes", "execute_workflow", "deliver_notifications",
        "escalate_overdue_approvals", "policy_review_reminders", "import_records",
        "decide_approval", "retry_executions", "cancel_execution", "refresh_governance",
    }  # fmt: skip
    assert {s.name for s in repo.sensor_defs} == {
        "entity_change_sensor",
        "processing_failure_sensor",
        "unprocessed_change_sweeper",
        "governance_refresh_sensor",
        "scheduled_workflows_sensor",
    }
    assert (
        repo.get_sensor_def("entity_change_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    )


def test_sensor_scenarios(database: DatabaseResource, sessions: sessionmaker[Session]) -> None:
    # First tick, empty table: a sentence, and a cursor.
    first = tick(database, None)
    assert first.run_requests == [] or first.run_requests is None
    assert first.skip_reason is not None and "No new changes" in first.skip_reason.skip_message
    # Some new: one run per change while the backlog is small, with the tags the UI shows.
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    some = tick(database, first.cursor)
    requests = some.run_requests or []
    assert [r.run_key for r in requests] == ["change-1", "change-2"]
    tags = requests[1].tags
    assert (tags["gov/entity"], tags["gov/change_ids"], tags["gov/queue"]) == (
        f"policy:{pid}",
        "2",
        "policy",
    )
    assert tags["dagster/priority"] == "7" and requests[0].tags["dagster/priority"] == "0"
    assert requests[1].run_config == {"ops": {"load_changes": {"config": {"change_ids": [2]}}}}
    # The same cursor evaluated twice asks for the same runs (the daemon dedupes by key).
    again = tick(database, first.cursor)
    assert [r.run_key for r in again.run_requests or []] == ["change-1", "change-2"]
    # Nothing new.
    idle = tick(database, some.cursor)
    assert not idle.run_requests and idle.skip_reason is not None
    # All new, backlog past the threshold: batches, a policy's changes together and in order.
    pids = [new_policy(sessions, title=f"P{i}") for i in range(3)]
    for p in pids:
        move(sessions, p, "in_review")
    burst = tick(database, idle.cursor)
    batches = [
        r.run_config["ops"]["load_changes"]["config"]["change_ids"]
        for r in burst.run_requests or []
    ]
    assert sorted(i for b in batches for i in b) == list(range(3, 9))
    with sessions.begin() as session:
        entity_of = dict(session.execute(select(EntityChange.id, EntityChange.entity_id)).all())
    for b in batches:
        assert b == sorted(b) and len(b) <= 4
    owners = {entity_of[i]: n for n, b in enumerate(batches) for i in b}
    assert all(owners[entity_of[i]] == n for n, b in enumerate(batches) for i in b)


def test_sensor_out_of_order_commit(database: DatabaseResource, engine: Any, is_pg: bool) -> None:
    if not is_pg:
        return  # SQLite cannot hold two writers; the reader tests cover it there
    start = tick(database, None).cursor
    early = engine.connect()
    try:
        t = early.begin()
        early.execute(
            text(
                "INSERT INTO policies (tenant_id, title, policy_type, content, business_units, status, version, version_number, tags, custom_fields, requires_acknowledgment, created_at, updated_at) VALUES ('acme','E','S','','[]','draft','1.0',1,'[]','{}',false,now(),now())"
            )
        )
        with engine.begin() as late:
            late.execute(
                text(
                    "INSERT INTO policies (tenant_id, title, policy_type, content, business_units, status, version, version_number, tags, custom_fields, requires_acknowledgment, created_at, updated_at) VALUES ('acme','L','S','','[]','draft','1.0',1,'[]','{}',false,now(),now())"
                )
            )
        one = tick(database, start)
        assert [r.run_key for r in one.run_requests or []] == ["change-2"]
        t.commit()
    finally:
        early.close()
    two = tick(database, one.cursor)
    assert [r.run_key for r in two.run_requests or []] == ["change-1"]
    assert ChangeCursor.decode(two.cursor).gaps == ()


def test_a_sensor_cursor_that_outlived_the_database_fails_the_tick(
    database: DatabaseResource, sessions: sessionmaker[Session], engine: Engine
) -> None:
    """The application database restored to an earlier point behind the sensor's cursor:
    new changes reuse ids the cursor has passed, so the tick fails, saying why, rather than
    skip them."""
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    move(sessions, pid, "draft")  # changes 1, 2, 3
    read = tick(database, tick(database, None).cursor)
    assert ChangeCursor.decode(read.cursor).watermark == 3
    restore_to_before(engine, 2)
    move(sessions, pid, "in_review")  # change 2 again, another change
    with pytest.raises(
        CursorMismatchError, match="change 3, the last one this cursor read, is gone"
    ):
        tick(database, read.cursor)
    move(sessions, pid, "draft")
    move(sessions, pid, "in_review")  # change 3 exists again, and is another change
    with pytest.raises(CursorMismatchError, match=r"change 3, .* was created at"):
        tick(database, read.cursor)


def test_process_changes_runs_the_engine_with_metadata(
    database: DatabaseResource, sessions: sessionmaker[Session]
) -> None:
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    result = process_changes.execute_in_process(
        run_config={"ops": {"load_changes": {"config": {"change_ids": [2]}}}},
        resources={"database": database},
    )
    assert result.success
    # Change 1 (the creation) was caught up first; both are marked processed.
    loaded = result.output_for_node("load_changes")
    assert loaded == [1, 2]
    meta = {
        e.step_key: e.event_specific_data.metadata  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type_value == "STEP_OUTPUT"
    }
    assert meta["match_workflows"]["workflows_matched"].value == {"review notice": 1}
    assert meta["execute_actions"]["actions_run"].value == {"0": 1, "1": 1}
    assert meta["record_outcome"]["executions_by_status"].value == {"completed": 1}
    assert count(sessions, ProcessedChange) == 2
    with sessions.begin() as session:
        (execution,) = session.scalars(select(WorkflowExecution)).all()
        assert execution.dagster_run_id == result.run_id
    # The same run again changes nothing.
    again = process_changes.execute_in_process(
        run_config={"ops": {"load_changes": {"config": {"change_ids": [1, 2]}}}},
        resources={"database": database},
    )
    assert again.success and count(sessions, Notification) == 2


def test_unknown_changes_fail_the_run_clearly(database: DatabaseResource) -> None:
    result = process_changes.execute_in_process(
        run_config={"ops": {"load_changes": {"config": {"change_ids": [999]}}}},
        resources={"database": database},
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert "unknown change(s): 999" in str(failure.event_specific_data.error)  # type: ignore[union-attr]


def test_a_fenced_run_fails_its_first_step_at_once_and_does_nothing(
    database: DatabaseResource, sessions: sessionmaker[Session]
) -> None:
    """A run another worker ended and fenced (its worker lost the lease) fails at its first
    step without a retry, whatever step its process comes back in; its changes stay for the
    retry."""
    from gov_pipeline.services.run_fences import fence_run

    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    run_id = str(uuid.uuid4())
    assert fence_run(sessions, run_id, "w2#3", "worker w1 lost its lease")
    result = process_changes.execute_in_process(
        run_config={"ops": {"load_changes": {"config": {"change_ids": [2]}}}},
        resources={"database": database}, run_id=run_id, raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "load_changes"
    assert "was ended by another worker (worker w1 lost its lease)" in str(
        failure.event_specific_data.error  # type: ignore[union-attr]
    )
    assert not [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
    assert count(sessions, ProcessedChange) == 0 and count(sessions, WorkflowExecution) == 0


def test_execute_workflow_by_hand(
    database: DatabaseResource, sessions: sessionmaker[Session]
) -> None:
    pid = new_policy(sessions)
    config = {
        "ops": {
            "run_workflow": {
                "config": {"tenant_id": "acme", "workflow": "review notice", "entity_id": pid}
            }
        }
    }
    result = execute_workflow.execute_in_process(
        run_config=config, resources={"database": database}
    )
    assert result.success
    with sessions.begin() as session:
        (execution,) = session.scalars(select(WorkflowExecution)).all()
    # A draft policy: the review notice's condition (changed_to in_review) is false.
    assert execution.status == "skipped" and execution.dedupe_key == f"manual:{result.run_id}"
    bad = {
        "ops": {
            "run_workflow": {"config": {"tenant_id": "acme", "workflow": "nope", "entity_id": pid}}
        }
    }
    failed = execute_workflow.execute_in_process(
        run_config=bad, resources={"database": database}, raise_on_error=False
    )
    assert not failed.success


@pytest.mark.parametrize("worker_died", [False, True])
def test_a_run_that_fails_for_good_fails_its_pending_executions(
    database: DatabaseResource, sessions: sessionmaker[Session], worker_died: bool
) -> None:
    """...unless its worker died: then they stay pending for the sweeper."""
    from gov_pipeline.coordinator.queue import WORKER_DIED_TAG
    from gov_pipeline.engine.matching import match_change

    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    with sessions.begin() as session:
        change = session.get(EntityChange, 2)
        assert change is not None
        match_change(session, change, database.settings())  # pending, as a dead run leaves it
    with dg.instance_for_test() as instance:
        result = process_changes.execute_in_process(
            run_config={"ops": {"load_changes": {"config": {"change_ids": [2, 999]}}}},
            resources={"database": database},
            instance=instance,
            raise_on_error=False,
        )
        if worker_died:  # as a worker tags a run it fails for a dead worker (not a retry's)
            instance.add_run_tags(result.run_id, {WORKER_DIED_TAG: result.run_id})
        assert not result.success
        with dg.build_run_status_sensor_context(
            sensor_name="processing_failure_sensor",
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
            resources={"database": database},
        ) as status:
            run_failure_sensor(load_settings())(status.for_run_failure())
    with sessions.begin() as session:
        (execution,) = session.scalars(select(WorkflowExecution)).all()
        if worker_died:
            assert execution.status == "pending"
            return
        assert execution.status == "failed"
        assert f"Dagster run {result.run_id} failed" in (execution.error or "")
        owner_notes = session.scalars(
            select(Notification).where(Notification.user_id == "wanda")
        ).all()
        assert len(owner_notes) == 1


def test_the_import_reminder_and_escalation_jobs(
    database: DatabaseResource, sessions: sessionmaker[Session], tmp_path: Any
) -> None:
    from pathlib import Path

    from gov_pipeline.db.models import Approval, Policy
    from gov_pipeline.orchestration.imports import import_records
    from gov_pipeline.orchestration.scheduled import (
        escalate_overdue_approvals,
        policy_review_reminders,
    )

    root = Path(__file__).resolve().parents[2]
    apply_yaml(sessions, (root / "examples/workflows/review_reminder.yaml").read_text())
    apply_yaml(sessions, (root / "examples/workflows/policy_approval.yaml").read_text())
    csv_path = tmp_path / "policies.csv"
    csv_path.write_text(
        "title,policy_type,owner_id,status,next_review_date\n"
        "Access,Information Security,olivia,published,2030-01-20\n"
        "Backup,Operations,paul,draft,\n"
        "Privacy notice,Privacy,olivia,draft,\n"
    )
    imported = import_records.execute_in_process(
        run_config={
            "ops": {
                "import_file": {
                    "config": {"path": str(csv_path), "tenant_id": "acme", "chunk_size": 2}
                }
            }
        },
        resources={"database": database},
    )
    assert imported.success
    meta = output_metadata(imported, "import_file")
    assert (meta["created"].value, meta["chunks"].value) == (3, 2)
    assert count(sessions, Policy) == 3
    bad = import_records.execute_in_process(
        run_config={
            "ops": {
                "import_file": {
                    "config": {"path": str(tmp_path / "missing.csv"), "tenant_id": "acme"}
                }
            }
        },
        resources={"database": database},
        raise_on_error=False,
    )
    assert not bad.success and count(sessions, Policy) == 3

    reminded = policy_review_reminders.execute_in_process(
        run_config={"ops": {"remind": {"config": {"as_of": "2030-01-01"}}}},
        resources={"database": database},
    )
    assert reminded.success
    meta = output_metadata(reminded, "remind")
    assert meta["created"].value == 1 and meta["by_workflow"].value == {"Review reminder": 1}

    with sessions.begin() as session:
        privacy = session.scalars(select(Policy).where(Policy.title == "Privacy notice")).one().id
    move(sessions, privacy, "in_review")
    with sessions.begin() as session:
        moved = session.scalar(
            select(func.max(EntityChange.id)).where(EntityChange.entity_id == str(privacy))
        )
    process_changes.execute_in_process(
        run_config={"ops": {"load_changes": {"config": {"change_ids": [moved]}}}},
        resources={"database": database},
    )
    with sessions.begin() as session:
        due = session.scalars(select(Approval.due_at).where(Approval.status == "pending")).one()
    assert due is not None
    from datetime import UTC, timedelta

    later = (due.replace(tzinfo=due.tzinfo or UTC) + timedelta(minutes=1)).isoformat()
    escalated = escalate_overdue_approvals.execute_in_process(
        run_config={"ops": {"escalate": {"config": {"as_of": later}}}},
        resources={"database": database},
    )
    assert escalated.success
    meta = output_metadata(escalated, "escalate")
    assert len(meta["escalated"].value) == 1
