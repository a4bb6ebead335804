"""Cancelling an execution, on both databases: it ends `cancelled`, its open approval steps
are withdrawn, its unsent webhooks are not sent, and nothing more runs for it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import (
    ActionRun,
    Approval,
    EntityChange,
    Notification,
    WebhookDelivery,
    WorkflowExecution,
)
from gov_pipeline.domain.errors import ConflictError, InvalidInputError, NotFoundError
from gov_pipeline.engine.manual import start_manual_execution
from gov_pipeline.runners.batch import match_planned, plan_run, process_batch
from gov_pipeline.runners.deliveries import deliver_pending
from gov_pipeline.services import approvals
from gov_pipeline.services.executions import (
    CancelledExecution,
    cancel_execution,
    retry_execution,
)
from gov_pipeline_tests.integration.engine_support import (
    NO_WAIT,
    apply_yaml,
    count,
    make_settings,
    move,
    new_policy,
    policy_status,
    process,
    start_example_approval,
    webhook_server,
)


@pytest.fixture
def settings(db_url: str):  # type: ignore[no-untyped-def]
    return make_settings(db_url)


def _cancel(sessions: sessionmaker[Session], execution_id: int, **kw: Any) -> CancelledExecution:
    with sessions.begin() as session:
        return cancel_execution(
            session, tenant_id=kw.pop("tenant_id", "acme"), execution_id=execution_id,
            actor=kw.pop("actor", "carol"), **kw,
        )  # fmt: skip


def _one(sessions: sessionmaker[Session], model: type[Any], *where: Any) -> Any:
    with sessions.begin() as session:
        return session.scalars(select(model).where(*where).order_by(model.id)).one()


def _all(sessions: sessionmaker[Session], model: type[Any], *where: Any) -> list[Any]:
    with sessions.begin() as session:
        return list(session.scalars(select(model).where(*where).order_by(model.id)))


def _waiting(sessions: sessionmaker[Session]) -> WorkflowExecution:
    return _one(sessions, WorkflowExecution, WorkflowExecution.status == "awaiting_approval")


def test_cancelling_a_waiting_approval_withdraws_its_steps_and_nothing_follows(
    sessions: sessionmaker[Session], tenant: str, settings: Any
) -> None:
    pid = start_example_approval(sessions, settings)
    execution = _waiting(sessions)
    step1, step2 = _all(sessions, Approval)
    assert (step1.status, step2.status) == ("pending", "waiting")
    # Carol approved step 1 before the cancel; her decision is processed only after it.
    with sessions.begin() as session:
        approvals.decide(
            session, tenant_id="acme", approval_id=step1.id, user_id="carol", decision="approve"
        )
    step1, step2 = _all(sessions, Approval)
    assert step1.status == "approved"

    done = _cancel(sessions, execution.id, actor="olivia", reason="  superseded by\nv2 ")

    assert done == CancelledExecution(
        execution_id=execution.id, tenant_id="acme", workflow="Policy approval",
        previous_status="awaiting_approval", status_reason="cancelled by olivia: superseded by v2",
        withdrawn_approvals=(step2.id,), cancelled_deliveries=(),
    )  # fmt: skip
    ended = _one(sessions, WorkflowExecution, WorkflowExecution.id == execution.id)
    assert (ended.status, ended.status_reason) == ("cancelled", done.status_reason)
    assert ended.finished_at is not None
    assert [s.status for s in _all(sessions, Approval)] == ["approved", "withdrawn"]
    runs_before = [r.step_key for r in _all(sessions, ActionRun)]

    # The decision made before the cancel is processed now: its claim finds the execution
    # cancelled, so step 2 is not opened and no follow-up runs.
    process(sessions, settings)
    assert _one(sessions, WorkflowExecution, WorkflowExecution.id == execution.id).status == (
        "cancelled"
    )
    assert [s.status for s in _all(sessions, Approval)] == ["approved", "withdrawn"]
    assert [r.step_key for r in _all(sessions, ActionRun)] == runs_before
    assert policy_status(sessions, pid) == "in_review"
    assert count(sessions, Notification, Notification.user_id == "ciso") == 0
    # A decision arriving later is refused: the step is closed.
    withdrawn = f"approval {step2.id} is already withdrawn"
    with pytest.raises(ConflictError, match=withdrawn), sessions.begin() as session:
        approvals.decide(
            session, tenant_id="acme", approval_id=step2.id, user_id="ciso", decision="approve"
        )
    with pytest.raises(ConflictError, match="is cancelled, not failed"), sessions.begin() as s:
        retry_execution(s, "acme", execution.id)


def test_withdrawn_steps_never_lead_to_a_follow_up(
    sessions: sessionmaker[Session], tenant: str, settings: Any
) -> None:
    """Should a withdrawn step meet an execution still waiting (cancelling writes both in one
    transaction, so only a hand edit does this), the flow ends there with nothing run."""
    pid = start_example_approval(sessions, settings)
    step1, step2 = _all(sessions, Approval)
    with sessions.begin() as session:
        session.execute(
            text("UPDATE approvals SET status = 'withdrawn' WHERE id = :i"), {"i": step2.id}
        )
        approvals.decide(
            session, tenant_id="acme", approval_id=step1.id, user_id="carol", decision="approve"
        )
    process(sessions, settings)
    ended = _one(sessions, WorkflowExecution, WorkflowExecution.status != "skipped")
    assert (ended.status, ended.status_reason) == (
        "cancelled",
        "its approval steps were withdrawn",
    )
    assert not any(r.step_key.startswith("on_") for r in _all(sessions, ActionRun))
    assert policy_status(sessions, pid) == "in_review"


WEBHOOK_THEN_APPROVAL = """
name: hook then approval
tenant_id: acme
type: approval
trigger: on_status_change
conditions: {field: new.status, op: changed_to, value: in_review}
actions:
  - {type: webhook, url: "URL", max_attempts: 2}
  - type: request_approval
    steps: [{approvers: {users: [carol]}}]
    on_approved: [{type: change_status, to: approved}]
"""


def test_cancelling_stops_its_unsent_webhooks(
    sessions: sessionmaker[Session], tenant: str, settings: Any
) -> None:
    with webhook_server([200]) as (url, received):
        apply_yaml(sessions, WEBHOOK_THEN_APPROVAL.replace("URL", url))
        pid = new_policy(sessions)
        move(sessions, pid, "in_review")
        # Executed, not yet delivered (process_batch leaves the outbox to its sender).
        changes = [c.id for c in _all(sessions, EntityChange)]
        process_batch(sessions, changes, settings, NO_WAIT, sleep=lambda s: None)
        delivery = _one(sessions, WebhookDelivery)
        assert delivery.status == "pending"
        execution = _waiting(sessions)

        done = _cancel(sessions, execution.id, reason=None)

        assert done.cancelled_deliveries == (delivery.id,)
        assert done.status_reason == "cancelled by carol"
        assert len(done.withdrawn_approvals) == 1
        stats = deliver_pending(sessions, settings, deadline_s=10)
        assert (stats.attempts, received.requests) == (0, 0)
        assert _one(sessions, WebhookDelivery).status == "cancelled"


def test_a_cancelled_pending_execution_is_never_claimed(
    sessions: sessionmaker[Session], tenant: str, settings: Any
) -> None:
    apply_yaml(sessions, WEBHOOK_THEN_APPROVAL.replace("URL", "http://127.0.0.1:9/x"))
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    changes = [c.id for c in _all(sessions, EntityChange)]
    match_planned(sessions, plan_run(sessions, changes).todo, settings)  # created, not run
    execution = _one(sessions, WorkflowExecution, WorkflowExecution.status == "pending")

    assert _cancel(sessions, execution.id).previous_status == "pending"

    stats = process(sessions, settings)
    assert stats.changes == 2 and stats.failed == []
    after = _one(sessions, WorkflowExecution, WorkflowExecution.id == execution.id)
    assert (after.status, after.started_at) == ("cancelled", None)
    assert count(sessions, ActionRun) == 0 and count(sessions, WebhookDelivery) == 0
    assert policy_status(sessions, pid) == "in_review"


NOT_ALLOWED = """
name: hook elsewhere
tenant_id: acme
type: notification
trigger: on_status_change
actions: [{type: webhook, url: "https://hooks.example.org/in"}]
"""


def test_a_failed_execution_may_be_cancelled_and_is_then_not_retried(
    sessions: sessionmaker[Session], tenant: str, settings: Any
) -> None:
    apply_yaml(sessions, NOT_ALLOWED)
    move(sessions, new_policy(sessions), "in_review")
    process(sessions, settings)
    failed = _one(sessions, WorkflowExecution)
    assert failed.status == "failed" and "is not allow-listed" in (failed.error or "")

    done = _cancel(sessions, failed.id, reason="host retired")

    assert (done.previous_status, done.withdrawn_approvals, done.cancelled_deliveries) == (
        "failed", (), (),
    )  # fmt: skip
    ended = _one(sessions, WorkflowExecution)
    assert (ended.status, ended.status_reason) == ("cancelled", "cancelled by carol: host retired")
    assert ended.error == failed.error  # what it failed with is kept
    with pytest.raises(ConflictError, match="is cancelled, not failed"), sessions.begin() as s:
        retry_execution(s, "acme", failed.id)


def test_what_cannot_be_cancelled(
    sessions: sessionmaker[Session], tenant: str, settings: Any
) -> None:
    apply_yaml(sessions, NOT_ALLOWED, name="done", actions=[{"type": "notify", "users": ["x"],
               "title": "t"}])  # fmt: skip
    apply_yaml(sessions, NOT_ALLOWED, name="never", conditions={"policy_type": "Finance"})
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    process(sessions, settings)
    completed = _one(sessions, WorkflowExecution, WorkflowExecution.status == "completed")
    # A change's skips are its skip row; a manual run whose conditions are false is a
    # skipped execution row.
    with sessions.begin() as session:
        start_manual_execution(
            session, tenant_id="acme", workflow="never", entity_id=pid, request_key="k"
        )
    skipped = _one(sessions, WorkflowExecution, WorkflowExecution.status == "skipped")

    with pytest.raises(ConflictError) as refused:
        _cancel(sessions, completed.id)
    assert str(refused.value) == (
        f"execution {completed.id} is completed: only a pending, awaiting_approval or failed "
        "execution can be cancelled"
    )
    with pytest.raises(ConflictError, match=f"execution {skipped.id} is skipped"):
        _cancel(sessions, skipped.id)
    with pytest.raises(NotFoundError, match="execution 999 not found in tenant 'acme'"):
        _cancel(sessions, 999)
    with pytest.raises(NotFoundError, match="not found in tenant 'globex'"):
        _cancel(sessions, completed.id, tenant_id="globex")
    with pytest.raises(InvalidInputError, match="not an execution id"):
        _cancel(sessions, "seven")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="actor"):
        _cancel(sessions, completed.id, actor="Jane Doe")
    with pytest.raises(InvalidInputError, match="reason: at most 2000 characters"):
        _cancel(sessions, completed.id, reason="x" * 2001)
    assert _one(sessions, WorkflowExecution, WorkflowExecution.id == completed.id).status == (
        "completed"
    )
    # Cancelled once; a second cancel is refused.
    apply_yaml(sessions, NOT_ALLOWED, name="fails")
    move(sessions, new_policy(sessions, title="B"), "in_review")
    process(sessions, settings)
    failed = _one(sessions, WorkflowExecution, WorkflowExecution.status == "failed")
    _cancel(sessions, failed.id)
    with pytest.raises(ConflictError, match=f"execution {failed.id} is already cancelled"):
        _cancel(sessions, failed.id)
