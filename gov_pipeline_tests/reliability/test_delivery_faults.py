"""Faults of input and delivery, on one running stack (daemon + two workers) shared by the
module: writers committing out of id order, the same sensor cursor evaluated twice, a
webhook answering 500 then 200, a webhook always answering 500, a poison change, and a
run canceled before it matched (the sweeper). Each ends with the invariant checker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import func, select, text

from gov_pipeline.config import load_settings
from gov_pipeline.db.models import (
    EntityChange,
    Notification,
    ProcessedChange,
    Task,
    WebhookDelivery,
    Workflow,
    WorkflowExecution,
)
from gov_pipeline.embedded.webhook_receiver import Received, webhook_receiver
from gov_pipeline.orchestration.processing import change_ids_of_run
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.orchestration.sensors import change_sensor
from gov_pipeline.orchestration.sweeper import SWEEP_TAG
from gov_pipeline_tests.conftest import REDIS_URL, _truncate_all, own_redis_prefix
from gov_pipeline_tests.reliability.support import (
    CHANGE_NOTICE,
    Stack,
    assert_clean,
    record,
    running_stack,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def _hook(name: str, title: str, url: str, attempts: int) -> str:
    return f"""
name: {name}
tenant_id: acme
type: notification
trigger: on_update
owner_id: wanda
conditions: {{field: entity.title, op: eq, value: "{title}"}}
actions: [{{type: webhook, url: "{url}", max_attempts: {attempts}}}]
"""


# A status move the lifecycle refuses (draft -> published): a permanent error for any
# policy titled Poison, whatever is retried.
POISON = """
name: publish at once
tenant_id: acme
type: status_change
trigger: on_update
owner_id: wanda
conditions: {field: entity.title, op: eq, value: Poison}
actions: [{type: change_status, to: published}]
"""


@dataclass
class Bench:
    stack: Stack
    flaky: Received
    down: Received


@pytest.fixture(scope="module")
def bench(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, dagster_storage_url: str
) -> Iterator[Bench]:
    _truncate_all(postgres_url)
    with ExitStack() as stack:
        flaky_url, flaky = stack.enter_context(webhook_receiver("test-secret", (500, 200)))
        down_url, down = stack.enter_context(webhook_receiver("test-secret", (500,)))
        prefix = stack.enter_context(own_redis_prefix())
        workflows = (
            CHANGE_NOTICE,
            _hook("flaky hook", "Flaky hook", flaky_url, 4),
            _hook("down hook", "Down hook", down_url, 3),
            POISON,
        )
        s = stack.enter_context(
            running_stack(
                tmp_path_factory.mktemp("delivery"), postgres_url, dagster_storage_url,
                REDIS_URL, prefix, workers=2, workflows=workflows,
                env={"GOV_PIPELINE_SWEEP_GRACE": "12", "GOV_PIPELINE_SWEEP_INTERVAL": "5"},
            )
        )  # fmt: skip
        yield Bench(s, flaky, down)


def _scalar(s: Stack, query: Any) -> int:
    with s.sessions.begin() as session:
        return int(session.scalar(query) or 0)


def _executions(s: Stack, workflow: str, entity_id: int) -> list[WorkflowExecution]:
    with s.sessions.begin() as session:
        return list(
            session.scalars(
                select(WorkflowExecution)
                .join(Workflow, Workflow.id == WorkflowExecution.workflow_id)
                .where(Workflow.name == workflow, WorkflowExecution.entity_id == str(entity_id))
                .order_by(WorkflowExecution.change_id)
            )
        )


def _settle_and_check(s: Stack, test: str, fault: str, since: float, **extra: Any) -> None:
    s.wait_settled(300)
    recovery = time.monotonic() - since
    report = s.check()
    assert_clean(s, report, expected_notices=s.updated_changes())
    record(fault, test, s, report, recovery, **extra)


def test_writers_committing_out_of_order(bench: Bench) -> None:
    """A transaction holds an earlier change id uncommitted while a later one commits and
    is processed; the earlier one is processed when it commits, nothing lost or doubled."""
    s = bench.stack
    early_pid, late_pid = s.add_policies(2)
    early = s.engine.connect()
    try:
        held = early.begin()
        # The stack's engine runs as the application role: name the tenants it works in.
        early.execute(text("SELECT set_config('gov.tenant_id', '*', true)"))
        early.execute(text("UPDATE policies SET content = 'early' WHERE id = :id"),
                      {"id": early_pid})  # fmt: skip
        early_id = early.execute(
            text("SELECT max(id) FROM entity_changes WHERE entity_id = :e"), {"e": str(early_pid)}
        ).scalar_one()
        s.write_updates(1, only=[late_pid])
        late_id = _scalar(s, select(func.max(EntityChange.id)))
        assert late_id > early_id
        wait_for(
            lambda: (
                _scalar(s, select(func.count()).where(ProcessedChange.change_id == late_id)) == 1
            ),
            180,
            "the later change to be processed",
        )
        held.commit()
        committed_at = time.monotonic()
    finally:
        early.close()
    _settle_and_check(s, "test_writers_committing_out_of_order", "writers committing out of order",
                      committed_at, early_change=early_id, late_change=late_id)  # fmt: skip
    assert [e.status for e in _executions(s, "change notice", early_pid)] == ["completed"]


def test_the_same_sensor_cursor_evaluated_twice(bench: Bench) -> None:
    """The sensor evaluated again from the start gives the same run keys; those runs,
    submitted again behind the daemon's back, find every change done: no new effect."""
    s = bench.stack
    s.write_updates(30)
    s.wait_settled(300)
    database = DatabaseResource(url=s.app_url)

    def evaluate() -> dg.SensorResult:
        with dg.build_sensor_context(
            instance=s.c.instance, cursor=None, resources={"database": database}
        ) as context:
            result = change_sensor(load_settings())(context)
        assert isinstance(result, dg.SensorResult)
        return result

    first, second = evaluate(), evaluate()
    keys = [r.run_key for r in second.run_requests or []]
    assert keys and keys == [r.run_key for r in first.run_requests or []]
    effects_before = (_scalar(s, select(func.count()).select_from(Notification)),
                      _scalar(s, select(func.count()).select_from(Task)))  # fmt: skip
    replayed_at = time.monotonic()
    s.c.submit([("process_changes", r.run_config, r.tags) for r in second.run_requests or []])
    _settle_and_check(s, "test_the_same_sensor_cursor_evaluated_twice",
                      "the same sensor cursor evaluated twice", replayed_at,
                      replayed_runs=len(keys))  # fmt: skip
    assert (
        _scalar(s, select(func.count()).select_from(Notification)),
        _scalar(s, select(func.count()).select_from(Task)),
    ) == effects_before


def test_a_webhook_answering_500_then_200_is_delivered_once(bench: Bench) -> None:
    s = bench.stack
    (pid,) = s.add_policies(1, title="Flaky hook")
    start = time.monotonic()
    s.write_updates(1, only=[pid])
    _settle_and_check(s, "test_a_webhook_answering_500_then_200_is_delivered_once",
                      "webhook 500 then 200", start)  # fmt: skip
    (execution,) = _executions(s, "flaky hook", pid)
    assert execution.status == "completed"
    with s.sessions.begin() as session:
        delivery = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.execution_id == execution.id)
        ).one()
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
            "delivered", 2, 200,
        )  # fmt: skip
    assert len(bench.flaky.bodies) == 1 and bench.flaky.bad_signatures == 0


def test_a_webhook_always_answering_500_fails_once_and_spares_later_changes(
    bench: Bench,
) -> None:
    s = bench.stack
    (pid,) = s.add_policies(1, title="Down hook")
    start = time.monotonic()
    s.write_updates(1, only=[pid])
    s.wait_settled(300)
    (failed,) = _executions(s, "down hook", pid)
    assert failed.status == "failed" and "after 3 attempts" in (failed.error or "")
    owner_told = _scalar(
        s,
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == "wanda", Notification.execution_id == failed.id),
    )
    assert owner_told == 1
    s.write_updates(2, only=[pid])  # later changes of the same policy
    _settle_and_check(s, "test_a_webhook_always_answering_500_fails_once_and_spares_later_changes",
                      "webhook always 500", start, attempts=bench.down.requests)  # fmt: skip
    notices = _executions(s, "change notice", pid)
    assert [e.status for e in notices] == ["completed"] * 3
    assert bench.down.bodies == [] and bench.down.requests == 9  # 3 changes x 3 attempts


def test_a_poison_change_does_not_block_the_changes_behind_it(bench: Bench) -> None:
    s = bench.stack
    (pid,) = s.add_policies(1, title="Poison")
    start = time.monotonic()
    s.write_updates(1, only=[pid])
    s.write_updates(20)  # other policies, and the poison policy again
    s.write_updates(1, only=[pid])
    _settle_and_check(s, "test_a_poison_change_does_not_block_the_changes_behind_it",
                      "poison change", start)  # fmt: skip
    poisoned = _executions(s, "publish at once", pid)
    assert len(poisoned) >= 2 and {e.status for e in poisoned} == {"failed"}
    assert all("not retryable" in (e.error or "") for e in poisoned)
    assert all(e.attempts <= 1 for e in poisoned)  # a permanent error is not retried
    assert {e.status for e in _executions(s, "change notice", pid)} == {"completed"}


def test_a_run_canceled_before_matching_is_swept(bench: Bench) -> None:
    """The change's only run is canceled while it waits: the change sensor will not ask
    again, the sweeper does once the grace period has passed."""
    s = bench.stack
    queue = s.c.instance.run_coordinator.queue
    (pid,) = s.add_policies(1)
    s.wait_settled(300)
    queue.pause("policy")
    try:
        s.write_updates(1, only=[pid])
        change_id = _scalar(s, select(func.max(EntityChange.id)))
        holders: list[str] = []

        def queued_run() -> bool:
            holders[:] = [
                r.run_id
                for r in s.c.instance.get_runs()
                if r.status.value == "QUEUED" and change_id in change_ids_of_run(r.run_config)
            ]
            return bool(holders)

        wait_for(queued_run, 120, "the change's run to be queued")
        for run_id in holders:
            assert s.c.instance.run_coordinator.cancel_run(run_id)
    finally:
        queue.resume("policy")
    canceled_at = time.monotonic()
    _settle_and_check(s, "test_a_run_canceled_before_matching_is_swept",
                      "run canceled before matching (sweeper)", canceled_at)  # fmt: skip
    swept = [
        r
        for r in s.c.instance.get_runs()
        if SWEEP_TAG in r.tags and change_id in change_ids_of_run(r.run_config)
    ]
    # (A sweep may have met the change while its first run was being created and been
    # canceled with it; a later sweep then did it.)
    assert any(r.status.value == "SUCCESS" for r in swept), [
        (r.run_id, r.status.value, r.tags) for r in swept
    ]
    assert [e.status for e in _executions(s, "change notice", pid)] == ["completed"]
