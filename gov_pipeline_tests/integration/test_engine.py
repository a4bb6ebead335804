"""The engine end to end on both databases: matching, actions, idempotency, failures, chains."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import (
    ActionRun,
    Approval,
    ConsumerCursor,
    EntityChange,
    Notification,
    Policy,
    Task,
    WebhookDelivery,
    WorkflowExecution,
)
from gov_pipeline.domain.entity_fields import (
    APPROVAL_DECISION_CHANGED,
    APPROVAL_DECISION_NEW,
    APPROVAL_DECISION_OLD,
)
from gov_pipeline.embedded.webhook_receiver import webhook_receiver
from gov_pipeline.engine.actions.registry import HANDLERS
from gov_pipeline.engine.matching import match_changes
from gov_pipeline.services.approvals import decide
from gov_pipeline.services.executions import list_executions
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import (
    another_application,
    apply_yaml,
    count,
    make_settings,
    move,
    new_policy,
    process,
    start_example_approval,
    webhook_server,
)

REVIEW_NOTICE = """
name: review notice
tenant_id: acme
type: notification
trigger: on_status_change
conditions: {field: new.status, op: changed_to, value: in_review}
owner_id: wanda
actions:
  - {type: notify, include_owner: true, roles: [compliance_officer], title: "Review {entity.title}"}
  - {type: create_task, title: "Review {entity.title}", assignee: owner, due_in_days: 7, priority: high}
  - {type: assign, user: carol, target: assignee}
"""

NEVER = """
name: privacy only
tenant_id: acme
type: notification
trigger: on_status_change
conditions: {policy_type: Privacy}
actions: [{type: notify, users: [x], title: never}]
"""


@pytest.fixture
def settings(db_url: str):  # type: ignore[no-untyped-def]
    return make_settings(db_url)


@pytest.fixture
def people(sessions: sessionmaker[Session], tenant: str) -> None:
    with sessions.begin() as session:
        upsert_user(session, tenant_id="acme", user_id="carol", roles=["compliance_officer"])
        upsert_user(session, tenant_id="acme", user_id="ciso", roles=["admin"])
        upsert_user(session, tenant_id="acme", user_id="mallory", roles=["viewer"])
        upsert_user(session, tenant_id="globex", user_id="gina", roles=["compliance_officer"])


def _executions(sessions: sessionmaker[Session]) -> list[WorkflowExecution]:
    with sessions.begin() as session:
        return list(session.scalars(select(WorkflowExecution).order_by(WorkflowExecution.id)))


def _outcomes(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    """Executions and the skips of the skip rows, as `executions list` gives them."""
    with sessions.begin() as session:
        return list_executions(session, "acme", limit=1000)


def test_a_matching_change_runs_each_action_once_and_others_are_skipped_with_a_reason(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    apply_yaml(sessions, REVIEW_NOTICE)
    apply_yaml(sessions, NEVER)
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    stats = process(sessions, settings)
    assert stats.changes == 3  # created, in_review, and the task it created (a change too)
    executions = _outcomes(sessions)
    by_status = sorted((e["status"], e["status_reason"] or "") for e in executions)
    assert [s for s, _ in by_status] == ["completed", "skipped"]
    assert "policy_type eq 'Privacy'" in by_status[1][1]
    # The skip is the change's skip row, not an execution row.
    assert [e.status for e in _executions(sessions)] == ["completed"]
    notified = {n.user_id for n in _all(sessions, Notification)}
    assert notified == {"olivia", "carol"}
    task = _all(sessions, Task)[0]
    assert (task.assignee_id, task.priority, task.title) == (
        "olivia",
        "high",
        "Review Access control",
    )
    done = next(e for e in executions if e["status"] == "completed")
    assert done["assignee_id"] == "carol" and done["workflow_version"] == 1
    # The same changes again (a replay from the start) change nothing.
    with sessions.begin() as session:
        session.execute(text("DELETE FROM consumer_cursors"))
    process(sessions, settings)
    assert len(_outcomes(sessions)) == 2
    assert count(sessions, Notification) == 3  # 2 notify + 1 task_assigned
    assert count(sessions, Task) == 1


def test_a_workflow_skipped_for_a_change_stays_skipped_when_the_change_is_matched_again(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    """Matching is replayed when a run fails after it: the skip row keeps the decision,
    even though the entity now satisfies the conditions (no execution appears)."""
    apply_yaml(sessions, NEVER)
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    with sessions.begin() as session:
        change = session.scalars(
            select(EntityChange).where(EntityChange.kind == "status_changed")
        ).one()
        (first,) = match_changes(session, [change], settings)
    assert list(first.skipped) == ["privacy only"]
    with sessions.begin() as session:
        session.execute(
            text("UPDATE policies SET policy_type = 'Privacy' WHERE id = :id"), {"id": pid}
        )
    with sessions.begin() as session:
        change = session.get(EntityChange, change.id)
        assert change is not None
        (again,) = match_changes(session, [change], settings)
    assert (again.matched, again.skipped, again.executions) == ([], {}, [])
    assert _executions(sessions) == []
    (skip,) = _outcomes(sessions)
    assert skip["change_id"] == change.id and "policy_type" in skip["status_reason"]


def _all(sessions: sessionmaker[Session], model: type[Any]) -> list[Any]:
    with sessions.begin() as session:
        return list(session.scalars(select(model).order_by(model.id)))


def test_applying_a_changed_definition_makes_a_new_version(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    apply_yaml(sessions, REVIEW_NOTICE)
    apply_yaml(sessions, REVIEW_NOTICE)  # unchanged: still version 1
    apply_yaml(sessions, REVIEW_NOTICE, priority=7)
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    process(sessions, settings)
    assert [e.workflow_version for e in _executions(sessions)] == [2]


def test_a_crash_in_the_middle_of_the_actions_redoes_each_effect_once(
    sessions: sessionmaker[Session], settings: Any, people: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_yaml(sessions, REVIEW_NOTICE)
    real = HANDLERS["create_task"]
    calls = {"n": 0}

    def crash_once(ctx: Any, action: Any) -> dict[str, Any]:
        calls["n"] += 1
        result = real(ctx, action)  # the task row is written ...
        if calls["n"] == 1:
            raise ConnectionError("worker died")  # ... and then the process dies
        return result

    monkeypatch.setitem(HANDLERS, "create_task", crash_once)
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    process(sessions, settings)
    assert calls["n"] == 2
    (execution,) = _executions(sessions)
    assert execution.status == "completed" and execution.attempts == 2
    assert count(sessions, Task) == 1
    assert count(sessions, Notification) == 3
    assert count(sessions, ActionRun, ActionRun.step_key == "0") == 1


def test_a_failing_action_is_retried_then_fails_the_execution_and_others_continue(
    sessions: sessionmaker[Session], settings: Any, people: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_yaml(sessions, REVIEW_NOTICE)
    real = HANDLERS["create_task"]
    doomed: set[int] = set()

    def flaky(ctx: Any, action: Any) -> dict[str, Any]:
        if int(ctx.execution.entity_id) in doomed:
            raise TimeoutError("task service unreachable")
        return real(ctx, action)

    monkeypatch.setitem(HANDLERS, "create_task", flaky)
    bad, good = new_policy(sessions, title="Bad"), new_policy(sessions, title="Good")
    doomed.add(bad)
    move(sessions, bad, "in_review")
    move(sessions, good, "in_review")
    process(sessions, settings)
    failed, ok = sorted(_executions(sessions), key=lambda e: e.entity_id != str(bad))
    assert failed.status == "failed" and failed.attempts == 3
    assert "task service unreachable" in (failed.error or "") and "after 3 attempts" in (
        failed.error or ""
    )
    assert ok.status == "completed"
    failed_run = _all(sessions, ActionRun)
    assert any(r.status == "failed" and r.step_key == "1" for r in failed_run)
    # The workflow owner hears about it, once; no half-done effects of the failed one remain.
    owner_notes = [n for n in _all(sessions, Notification) if n.user_id == "wanda"]
    assert len(owner_notes) == 1 and "failed" in owner_notes[0].title
    assert count(sessions, Task) == 1


def test_an_illegal_status_move_fails_at_once_without_retries(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    apply_yaml(
        sessions,
        """
name: publish at once
tenant_id: acme
type: status_change
trigger: on_create
actions: [{type: change_status, to: published}]
""",
    )
    new_policy(sessions)
    process(sessions, settings)
    (execution,) = _executions(sessions)
    assert execution.status == "failed" and execution.attempts == 1
    assert "draft -> published" in (execution.error or "") and "not retryable" in (
        execution.error or ""
    )


PING = """
name: ping
tenant_id: acme
type: status_change
trigger: on_status_change
conditions: {field: new.status, op: changed_to, value: in_review}
actions: [{type: change_status, to: draft}]
"""
PONG = """
name: pong
tenant_id: acme
type: status_change
trigger: on_status_change
conditions: {field: new.status, op: changed_to, value: draft}
actions: [{type: change_status, to: in_review}]
"""


def test_chains_are_recorded_and_a_loop_stops_at_the_depth_limit(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    apply_yaml(sessions, PING)
    apply_yaml(sessions, PONG)
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    process(sessions, settings)
    executions = [e for e in _executions(sessions) if e.status != "skipped"]
    depths = [e.chain_depth for e in executions]
    assert depths == list(range(settings.chain_depth_limit + 1))
    assert [e.workflow_id for e in executions] == [1, 2, 1, 2, 1, 2]
    assert all(e.status == "completed" for e in executions[:-1])
    last = executions[-1]
    assert last.status == "failed"
    assert f"chain depth limit {settings.chain_depth_limit} reached" in (last.error or "")
    assert last.caused_by_execution_id == executions[-2].id


def _review_notice_ran(sessions: sessionmaker[Session], settings: Any) -> WorkflowExecution:
    """The review notice applied and run for a policy moved to review: its execution."""
    apply_yaml(sessions, REVIEW_NOTICE)
    move(sessions, new_policy(sessions), "in_review")
    process(sessions, settings)
    (execution,) = _executions(sessions)
    return execution


def test_a_task_a_workflow_creates_is_a_change_of_that_execution_one_level_deeper(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    # PostgreSQL writes a chunk's tasks in one multi-row INSERT: the capture reads the
    # execution off the task row; SQLite writes each under its execution's capture context.
    execution = _review_notice_ran(sessions, settings)
    with sessions.begin() as session:
        (task,) = session.scalars(select(Task)).all()
        (created,) = session.scalars(
            select(EntityChange).where(EntityChange.entity_type == "task")
        ).all()
        assert created.kind == "created" and created.entity_id == str(task.id)
        assert (created.caused_by_execution_id, created.chain_depth, created.actor) == (
            execution.id, 1, "workflow:review notice",
        )  # fmt: skip


def test_a_task_naming_another_tenants_execution_is_not_that_executions_change(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    execution = _review_notice_ran(sessions, settings)
    with sessions.begin() as session:
        session.add(
            Task(
                tenant_id="globex", title="forged", status="todo", created_by="gina",
                execution_id=execution.id, action_run_id=10**9,
            )
        )  # fmt: skip
    with sessions.begin() as session:
        forged = session.scalars(
            select(EntityChange).where(
                EntityChange.entity_type == "task", EntityChange.tenant_id == "globex"
            )
        ).one()
        assert (forged.caused_by_execution_id, forged.chain_depth) == (None, 0)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite: one writer, ours
def test_another_application_cannot_make_its_task_a_workflows_change(
    db_url: str, sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    execution = _review_notice_ran(sessions, settings)
    with another_application(db_url) as portal, portal.begin() as conn:
        conn.execute(text("SELECT set_config('gov.tenant_id', 'acme', true)"))
        conn.execute(
            text(
                "INSERT INTO tasks (tenant_id, title, status, created_by, execution_id,"
                " action_run_id) VALUES ('acme', 'mine', 'todo', 'portal', :e, 1)"
            ),
            {"e": execution.id},
        )
    with sessions.begin() as session:
        theirs = session.scalars(
            select(EntityChange).where(
                EntityChange.entity_type == "task", EntityChange.actor.is_(None)
            )
        ).one()
        assert (theirs.caused_by_execution_id, theirs.chain_depth) == (None, 0)


def test_workflows_only_see_their_own_tenant(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    apply_yaml(sessions, REVIEW_NOTICE)
    theirs = new_policy(sessions, tenant="globex")
    move(sessions, theirs, "in_review", tenant="globex")
    process(sessions, settings)
    assert _executions(sessions) == []
    assert count(sessions, Notification) == 0


def test_a_change_for_a_vanished_entity_is_skipped_with_a_reason(
    sessions: sessionmaker[Session], settings: Any, people: None, engine: Any
) -> None:
    apply_yaml(sessions, REVIEW_NOTICE)
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM policies WHERE id = :id"), {"id": pid})
    process(sessions, settings)
    assert _executions(sessions) == []
    (skip,) = _outcomes(sessions)
    assert skip["status"] == "skipped" and "not found" in (skip["status_reason"] or "")


def test_two_processors_at_once_produce_each_effect_once(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    """The sync path beside another consumer (as the Dagster path would be)."""
    apply_yaml(sessions, REVIEW_NOTICE)
    ids = [new_policy(sessions, title=f"P{i}") for i in range(12)]
    for pid in ids:
        move(sessions, pid, "in_review")
    errors: list[BaseException] = []

    def consume(name: str) -> None:
        try:
            process(sessions, settings, consumer=name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(n,)) for n in ("sync", "other")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    executions = _executions(sessions)
    assert len(executions) == 12 and {e.status for e in executions} == {"completed"}
    assert count(sessions, Task) == 12
    assert count(sessions, Notification) == 36
    with sessions.begin() as session:
        assert len(session.scalars(select(ConsumerCursor)).all()) == 2


WEBHOOK = """
name: publication hook
tenant_id: acme
type: notification
trigger: on_status_change
owner_id: wanda
conditions: {field: new.status, op: changed_to, value: in_review}
actions: [{type: webhook, url: "URL", max_attempts: 4}]
"""


def test_a_webhook_that_fails_then_succeeds_is_delivered_once_signed(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    with webhook_server([500, 200]) as (url, received):
        apply_yaml(sessions, WEBHOOK.replace("URL", url))
        pid = new_policy(sessions)
        move(sessions, pid, "in_review")
        process(sessions, settings)
    assert received.bad_signatures == 0
    assert len(received.bodies) == 1
    body = received.bodies[0]
    assert body["change"]["new"]["status"] == "in_review" and body["entity"]["id"] == str(pid)
    (delivery,) = _all(sessions, WebhookDelivery)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)
    assert _executions(sessions)[0].status == "completed"


def test_a_webhook_that_always_fails_fails_its_execution_and_tells_the_owner(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    with webhook_server([500]) as (url, received):
        apply_yaml(sessions, WEBHOOK.replace("URL", url))
        apply_yaml(sessions, REVIEW_NOTICE)
        first, second = new_policy(sessions), new_policy(sessions)
        move(sessions, first, "in_review")
        move(sessions, second, "in_review")
        process(sessions, settings)
    assert received.bodies == []
    hooks = [e for e in _executions(sessions) if e.workflow_id == 1]
    assert {e.status for e in hooks} == {"failed"}
    assert all("after 4 attempts" in (e.error or "") for e in hooks)
    others = [e for e in _executions(sessions) if e.workflow_id != 1]
    assert {e.status for e in others} == {"completed"}
    assert len([n for n in _all(sessions, Notification) if n.user_id == "wanda"]) == 2


def test_a_webhook_to_a_host_off_the_allow_list_is_refused(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    apply_yaml(sessions, WEBHOOK.replace("URL", "https://evil.example/x"))
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    process(sessions, settings)
    (execution,) = _executions(sessions)
    assert execution.status == "failed" and "not allow-listed" in (execution.error or "")
    assert count(sessions, WebhookDelivery) == 0


def test_an_unsigned_webhook_goes_out_without_a_signature_only_because_it_says_so(
    sessions: sessionmaker[Session], db_url: str, people: None
) -> None:
    # No key anywhere: the action's `unsigned: true` is what lets it go.
    settings = make_settings(db_url, GOV_PIPELINE_WEBHOOK_SECRET="")
    with webhook_receiver(None, (204,)) as (url, received):
        hook = WEBHOOK.replace('url: "URL"', f'url: "{url}", unsigned: true')
        apply_yaml(sessions, hook, webhook_secret=None)
        move(sessions, new_policy(sessions), "in_review")
        process(sessions, settings)
    (headers,) = received.headers
    assert "x-gov-signature" not in headers and headers["x-gov-delivery-id"]
    (delivery,) = _all(sessions, WebhookDelivery)
    assert (delivery.unsigned, delivery.status) == (True, "delivered")
    assert _executions(sessions)[0].status == "completed"


def test_a_webhook_with_no_key_where_it_is_sent_sends_nothing_and_fails(
    sessions: sessionmaker[Session], db_url: str, people: None
) -> None:
    """Applied where GOV_PIPELINE_WEBHOOK_SECRET was set, sent by a process without it: each
    attempt is refused with the reason; the execution fails and the owner is told."""
    settings = make_settings(db_url, GOV_PIPELINE_WEBHOOK_SECRET="")
    with webhook_receiver(None, (204,)) as (url, received):
        apply_yaml(sessions, WEBHOOK.replace("URL", url))
        move(sessions, new_policy(sessions), "in_review")
        process(sessions, settings)
    assert received.headers == []
    (delivery,) = _all(sessions, WebhookDelivery)
    reason = (
        "no signing secret: GOV_PIPELINE_WEBHOOK_SECRET is not set in this process; "
        "refusing to send unsigned"
    )
    assert (delivery.unsigned, delivery.status, delivery.attempts) == (False, "failed", 4)
    assert delivery.last_error == reason
    (execution,) = _executions(sessions)
    assert execution.status == "failed" and reason in (execution.error or "")
    assert [n.user_id for n in _all(sessions, Notification)] == ["wanda"]


DECIDED = """
name: decision notice
tenant_id: acme
type: notification
trigger: on_approval_decided
conditions:
  all:
    - {field: new.decision, op: eq, value: approve}
    - {field: old.approval_status, op: eq, value: pending}
    - {field: new.approval_status, op: changed_to, value: approved}
    - {field: changed, op: contains, value: approval_status}
    - {field: new.decided_by, op: eq, value: carol}
    - {field: entity.status, op: eq, value: in_review}
actions: [{type: notify, users: [ciso], title: "A step was approved"}]
"""


def test_an_on_approval_decided_workflow_reads_what_a_decision_records(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    """The names the field check allows on_approval_decided conditions are the ones `decide`
    writes: a workflow using them is accepted and matches a real decision."""
    start_example_approval(sessions, settings)
    apply_yaml(sessions, DECIDED)
    with sessions.begin() as session:
        step = session.scalars(select(Approval).where(Approval.status == "pending")).one()
        change = decide(
            session, tenant_id="acme", approval_id=step.id, user_id="carol", decision="approve"
        )
        assert set(change.new_values or {}) == set(APPROVAL_DECISION_NEW.names)
        assert set(change.old_values or {}) == set(APPROVAL_DECISION_OLD.names)
        assert set(change.changed_fields) == set(APPROVAL_DECISION_CHANGED.names)
    process(sessions, settings)
    notified = [n for n in _all(sessions, Notification) if n.title == "A step was approved"]
    assert [n.user_id for n in notified] == ["ciso"]


def test_assign_owner_is_a_captured_change(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    apply_yaml(
        sessions,
        """
name: hand over
tenant_id: acme
type: status_change
trigger: on_create
actions: [{type: assign, user: carol, target: owner}]
""",
    )
    pid = new_policy(sessions)
    process(sessions, settings)
    with sessions.begin() as session:
        assert session.get(Policy, pid).owner_id == "carol"  # type: ignore[union-attr]
    assert _executions(sessions)[0].status == "completed"


def test_retrying_a_failed_delivery_resends_it_without_repeating_the_actions(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    from gov_pipeline.runners.retries import retry_now
    from gov_pipeline.services.executions import retry_execution

    with webhook_server([500, 500, 500, 500, 200]) as (url, received):
        apply_yaml(sessions, WEBHOOK.replace("URL", url))
        pid = new_policy(sessions)
        move(sessions, pid, "in_review")
        process(sessions, settings)
        (execution,) = _executions(sessions)
        assert execution.status == "failed"
        with sessions.begin() as session:
            assert retry_execution(session, "acme", execution.id) == "deliveries"
        retry_now(sessions, settings, execution.id, "deliveries", sleep=lambda s: None)
    assert len(received.bodies) == 1
    (execution,) = _executions(sessions)
    assert execution.status == "completed"
    assert count(sessions, WebhookDelivery) == 1
    assert (
        count(sessions, ActionRun, ActionRun.status == "completed", ActionRun.step_key == "0") == 1
    )


def test_retrying_an_execution_that_kept_nothing_runs_it_again(
    sessions: sessionmaker[Session], settings: Any, people: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gov_pipeline.runners.retries import retry_now
    from gov_pipeline.services.executions import retry_execution

    apply_yaml(sessions, REVIEW_NOTICE)
    real = HANDLERS["create_task"]
    monkeypatch.setitem(HANDLERS, "create_task", lambda ctx, action: 1 / 0)
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    process(sessions, settings)
    (execution,) = _executions(sessions)
    assert (
        execution.status == "failed"
        and count(sessions, Notification, Notification.user_id == "wanda") == 1
    )
    monkeypatch.setitem(HANDLERS, "create_task", real)
    with sessions.begin() as session:
        assert retry_execution(session, "acme", execution.id) == "pending"
    retry_now(sessions, settings, execution.id, "pending", sleep=lambda s: None)
    (execution,) = _executions(sessions)
    assert execution.status == "completed" and execution.attempts == 1
    assert count(sessions, Task) == 1
    assert count(sessions, ActionRun, ActionRun.status == "failed") == 0


def test_a_later_change_processed_first_brings_its_entitys_earlier_changes_first(
    sessions: sessionmaker[Session], settings: Any, people: None
) -> None:
    """Two runs of one policy may start in the wrong order; the engine keeps commit order."""
    from gov_pipeline.db.models import EntityChange, ProcessedChange
    from gov_pipeline.runners.batch import process_batch
    from gov_pipeline_tests.integration.engine_support import NO_WAIT

    apply_yaml(sessions, REVIEW_NOTICE)
    apply_yaml(
        sessions,
        """
name: on create
tenant_id: acme
type: notification
trigger: on_create
actions: [{type: notify, users: [carol], title: created}]
""",
    )
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    new_policy(sessions, title="Other")
    with sessions.begin() as session:
        ids = list(session.scalars(select(EntityChange.id).order_by(EntityChange.id)))
    created, moved, other_created = ids

    def batch(change_id: int) -> Any:
        return process_batch(sessions, [change_id], settings, NO_WAIT, sleep=lambda s: None)

    report = batch(moved)
    assert report.changes == [created, moved]  # not the other policy's
    assert report.catch_up == [created]
    again = batch(created)
    assert again.changes == [] and again.already == [created]
    runs = [e for e in _executions(sessions) if e.status == "completed"]
    assert [e.change_id for e in runs] == [created, moved]
    assert count(sessions, ProcessedChange) == 2
    assert batch(other_created).changes == [other_created]
