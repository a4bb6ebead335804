"""The ops of a run are retried by its lane's rule (domain/lanes.py; a run's `gov/attempts`
and `gov/backoff` tags, set at submit from dagster.yaml, override it): the attempts, the
waits, the engine's attempt count, the last attempt failing with its own error, and no
effect twice (notifications, tasks, imported records). On both databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import Notification, Policy, Task, WorkflowExecution
from gov_pipeline.engine.actions.registry import HANDLERS
from gov_pipeline.orchestration import processing
from gov_pipeline.orchestration.imports import import_records
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners import batch
from gov_pipeline.services import records
from gov_pipeline_tests.integration.engine_support import apply_yaml, count, make_settings

ON_CREATE = """
name: new policy notice
tenant_id: acme
type: notification
trigger: on_create
owner_id: wanda
actions:
  - {type: notify, include_owner: true, title: "New: {entity.title}"}
  - {type: create_task, title: "Review {entity.title}", assignee: owner}
"""


def _cut(times: int) -> Any:
    """A stand-in that fails like a cut connection `times` times, then calls the real one."""
    calls: list[int] = []

    def wrap(real: Any) -> Any:
        def cut(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) <= times:
                raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
            return real(*args, **kwargs)

        cut.calls = calls  # type: ignore[attr-defined]
        return cut

    return wrap


def _process(db_url: str, tags: dict[str, str]) -> dg.ExecuteInProcessResult:
    return processing.process_changes.execute_in_process(
        run_config={"ops": {"load_changes": {"config": {"change_ids": [1]}}}},
        resources={"database": DatabaseResource(url=db_url)},
        tags=tags,
        raise_on_error=False,
    )


def _waits(result: dg.ExecuteInProcessResult, step: str) -> list[float]:
    """The `seconds_to_wait` of each retry of `step` Dagster recorded."""
    return [
        e.event_specific_data.seconds_to_wait  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY and e.step_key == step
    ]


def _effects(sessions: sessionmaker[Session]) -> tuple[int, int]:
    """(notices "New: Access", tasks) the workflow made."""
    return count(sessions, Notification, Notification.title == "New: Access"), count(sessions, Task)


@pytest.fixture
def created(db_url: str, sessions: sessionmaker[Session], tenant: str) -> str:
    """A workflow that notifies and creates a task when a policy is created, and one
    policy created (change 1)."""
    make_settings(db_url)
    apply_yaml(sessions, ON_CREATE)
    with sessions.begin() as session:
        records.create_record(
            session,
            "policy",
            tenant_id=tenant,
            fields={"title": "Access", "policy_type": "S", "owner_id": "olivia"},
        )
    return db_url


def test_a_run_of_the_assessment_lane_waits_its_fixed_5_s(
    created: str, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    cut = _cut(1)(batch.deliver_pending)
    monkeypatch.setattr(batch, "deliver_pending", cut)
    result = _process(created, {"gov/queue": "assessment"})  # no rule tags: the lane's
    assert result.success
    assert _waits(result, "record_outcome") == [5.0]  # assessment: 3 attempts, fixed 5 s
    assert len(cut.calls) == 2
    # The retried step repeated nothing: one notice, one task.
    assert _effects(sessions) == (1, 1)


def test_the_waits_grow_as_the_rule_says_and_the_engine_counts_the_same_attempts(
    created: str, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An action that fails after writing its rows: the attempt is rolled back, the op is
    retried by the rule in the run's tags, and the execution completes once."""
    real = HANDLERS["notify"]
    failures = {"left": 2}

    def flaky(ctx: Any, action: Any) -> dict[str, Any]:
        done = real(ctx, action)
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("connection reset")
        return done

    monkeypatch.setitem(HANDLERS, "notify", flaky)
    tags = {"gov/queue": "evidence", "gov/attempts": "3", "gov/backoff": "exponential 0.1s"}
    result = _process(created, tags)
    assert result.success
    assert _waits(result, "execute_actions") == [0.1, 0.3]  # (2^n - 1) x 0.1 s
    with sessions.begin() as session:
        (execution,) = session.scalars(select(WorkflowExecution)).all()
        # Two failed attempts and the third completed: the engine allowed the rule's 3.
        assert (execution.status, execution.attempts) == ("completed", 3)
    assert _effects(sessions) == (1, 1)


def test_the_last_attempt_fails_the_op_with_its_own_error(
    created: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut = _cut(100)(batch.deliver_pending)
    monkeypatch.setattr(batch, "deliver_pending", cut)
    result = _process(created, {"gov/queue": "reporting", "gov/attempts": "2"})
    assert not result.success
    assert _waits(result, "record_outcome") == [0.0]  # reporting: no backoff
    assert len(cut.calls) == 2
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "record_outcome"
    assert "server closed the connection" in str(failure.event_specific_data)


def test_an_import_retried_after_a_failure_creates_each_record_once(
    db_url: str,
    sessions: sessionmaker[Session],
    tenant: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The import lane's 3 attempts: the retry goes on after the chunks the failed attempt
    committed, so no record is created twice."""
    path = tmp_path / "p.csv"
    path.write_text("title,policy_type\n" + "".join(f"P{i},S\n" for i in range(1200)))
    real = records.create_record
    calls: list[int] = []

    def fail_in_chunk_two(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 700:  # chunk 1 (500) committed, chunk 2 rolls back
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        return real(*args, **kwargs)

    monkeypatch.setattr(records, "create_record", fail_in_chunk_two)
    config = {"path": str(path), "tenant_id": tenant, "chunk_size": 500}
    result = import_records.execute_in_process(
        run_config={"ops": {"import_file": {"config": config}}},
        resources={"database": DatabaseResource(url=db_url)},
    )
    assert result.success
    assert _waits(result, "import_file") == [0.0]
    with sessions.begin() as session:
        titles = session.scalars(select(Policy.title)).all()
        distinct = session.scalar(select(func.count(func.distinct(Policy.title))))
    assert len(titles) == 1200 and distinct == 1200
    assert len(calls) == 700 + 700  # the retry created the 700 rows after the first 500
