"""The batch path on both databases: chunks commit together, a failure ends its chunk and is
counted, a poison change does not block the changes behind it, order holds."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import EntityChange, Notification, ProcessedChange, WorkflowExecution
from gov_pipeline.domain.errors import RunFencedError
from gov_pipeline.engine.actions.registry import HANDLERS
from gov_pipeline.runners.batch import process_batch
from gov_pipeline.services.run_fences import fence_run, refuse_if_fenced
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import (
    NO_WAIT,
    apply_yaml,
    count,
    make_settings,
    move,
    new_policy,
)

NOTICE = """
name: review notice
tenant_id: acme
type: notification
trigger: on_status_change
conditions: {field: new.status, op: changed_to, value: in_review}
owner_id: wanda
actions:
  - {type: notify, users: [carol], title: "Review {entity.title}"}
"""


@pytest.fixture
def settings(db_url: str, sessions: sessionmaker[Session], tenant: str):  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        upsert_user(session, tenant_id="acme", user_id="carol", roles=["compliance_officer"])
        upsert_user(session, tenant_id="acme", user_id="wanda", roles=["admin"])
    built = make_settings(db_url)
    apply_yaml(sessions, NOTICE)
    return built


def _moves(sessions: sessionmaker[Session], titles: list[str]) -> tuple[list[int], list[int]]:
    """One policy per title, each moved to in_review: (every change id, the moves' ids)."""
    for title in titles:
        move(sessions, new_policy(sessions, title=title), "in_review")
    with sessions.begin() as session:
        rows = session.execute(select(EntityChange.id, EntityChange.kind).order_by(EntityChange.id))
        changes = [(int(i), kind) for i, kind in rows]
    return [i for i, _ in changes], [i for i, kind in changes if kind == "status_changed"]


def _by_change(sessions: sessionmaker[Session]) -> dict[int, WorkflowExecution]:
    with sessions.begin() as session:
        return {
            e.change_id: e
            for e in session.scalars(select(WorkflowExecution)).all()
            if e.change_id is not None
        }


def _batch(sessions: sessionmaker[Session], ids: list[int], settings: Any, **kw: Any) -> Any:
    waits: list[float] = []
    report = process_batch(sessions, ids, settings, NO_WAIT, sleep=waits.append, **kw)
    return report, waits


def test_a_batch_commits_in_chunks_and_marks_every_change_with_its_effects(
    sessions: sessionmaker[Session], settings: Any
) -> None:
    every, moves = _moves(sessions, [f"P{i}" for i in range(7)])
    report, waits = _batch(sessions, moves, settings, chunk_changes=3)
    # the moves bring their policies' creates in first (catch-up), in commit order
    assert report.changes == every and report.catch_up == sorted(set(every) - set(moves))
    assert waits == [] and report.failures == 0
    # 14 changes in chunks of 3: five execution transactions (plus one for matching)
    assert report.commits == 1 + 5
    assert count(sessions, Notification) == 7
    assert count(sessions, ProcessedChange) == 14
    # replayed: nothing is done twice
    again, _ = _batch(sessions, every, settings)
    assert again.changes == [] and again.already == every
    assert count(sessions, Notification) == 7


def test_a_poison_change_fails_alone_and_the_changes_behind_it_complete(
    sessions: sessionmaker[Session], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = HANDLERS["notify"]

    def poisoned(ctx: Any, action: Any) -> dict[str, Any]:
        if ctx.entity is not None and ctx.entity.title == "poison":
            raise ValueError("cannot handle this policy")
        return real(ctx, action)

    monkeypatch.setitem(HANDLERS, "notify", poisoned)
    every, moves = _moves(sessions, ["a", "poison", "b", "c"])
    report, waits = _batch(sessions, every, settings)
    executions = _by_change(sessions)
    statuses = [executions[c].status for c in moves]
    assert statuses == ["completed", "failed", "completed", "completed"]
    # a handler's bug is retried (transient) until the attempts are used up, then failed
    assert executions[moves[1]].attempts == NO_WAIT.max_attempts
    assert len(waits) == NO_WAIT.max_attempts - 1
    assert report.changes == every  # every change processed, in order
    assert count(sessions, ProcessedChange) == 8
    # one notification per good change, and the owner's failure notice
    assert count(sessions, Notification, Notification.user_id == "carol") == 3
    assert count(sessions, Notification, Notification.user_id == "wanda") == 1


def test_a_transient_failure_mid_chunk_keeps_what_came_before_and_the_order(
    sessions: sessionmaker[Session], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = HANDLERS["notify"]
    failures = {"left": 1}

    def flaky(ctx: Any, action: Any) -> dict[str, Any]:
        result = real(ctx, action)  # the rows are written ...
        if ctx.entity is not None and ctx.entity.title == "flaky" and failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("connection reset")  # ... then the attempt dies
        return result

    monkeypatch.setitem(HANDLERS, "notify", flaky)
    every, moves = _moves(sessions, ["a", "b", "flaky", "c"])
    report, waits = _batch(sessions, every, settings)
    executions = _by_change(sessions)
    assert [executions[c].status for c in moves] == ["completed"] * 4
    assert executions[moves[2]].attempts == 2 and len(waits) == 1
    # the failed attempt's rows were rolled back: one notification per change
    assert count(sessions, Notification) == 4
    started = [executions[c].started_at for c in moves]
    assert started == sorted(started)  # commit order kept
    # what came before the failure committed in one chunk, the rest in one after the retry
    assert report.commits == 1 + 2
    assert report.failures == 1


def test_a_fenced_run_commits_nothing_and_its_retry_does_the_work(
    sessions: sessionmaker[Session], settings: Any
) -> None:
    """A run another worker ended (its worker lost the lease) is fenced: a chunk of it that
    comes late rolls back whole, and the retry (another run id) does the work once."""
    every, moves = _moves(sessions, ["P0", "P1"])
    assert fence_run(sessions, "run-late", "w2#7", "worker w1 lost its lease")
    assert fence_run(sessions, "run-late", "w2#7", "again")  # idempotent
    with pytest.raises(RunFencedError, match="run-late was ended by another worker"):
        _batch(sessions, moves, settings, run_id="run-late")
    assert count(sessions, ProcessedChange) == 0 and count(sessions, Notification) == 0
    report, _ = _batch(sessions, moves, settings, run_id="run-retry")
    assert report.changes == every and count(sessions, Notification) == 2


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_fence_waits_for_the_runs_transaction_in_flight(
    sessions: sessionmaker[Session], settings: Any
) -> None:
    """On PostgreSQL the fence and the run's commit are ordered: a transaction of the run
    that has checked the fence holds it off until it ends (the fence times out, and is tried
    again), and once the fence is in, the run's next transaction is refused."""
    with sessions.begin() as in_flight:
        refuse_if_fenced(in_flight, "run-a")
        assert not fence_run(sessions, "run-a", "w2#1", "lost", lock_timeout_ms=200)
        assert fence_run(sessions, "run-b", "w2#2", "lost", lock_timeout_ms=200)  # not locked
    assert fence_run(sessions, "run-a", "w2#1", "lost", lock_timeout_ms=200)
    with pytest.raises(RunFencedError), sessions.begin() as late:
        refuse_if_fenced(late, "run-a")
