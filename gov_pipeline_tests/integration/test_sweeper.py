"""The sweeper sensor as a scenario table: stranded changes get runs; changes within the
grace window, changes held by a waiting run and processed changes do not; a change is
swept at most MAX_SWEEPS times."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import load_settings
from gov_pipeline.db.models import EntityChange, ProcessedChange
from gov_pipeline.orchestration.processing import process_changes
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.orchestration.sweeper import SWEEP_TAG, sweeper_sensor
from gov_pipeline.runners.sweep import MAX_SWEEPS, SweepCursor
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
conditions: {field: new.status, op: changed_to, value: in_review}
actions: [{type: notify, include_owner: true, title: "Review {entity.title}"}]
"""


@pytest.fixture
def database(
    db_url: str, sessions: sessionmaker[Session], tenant: str, monkeypatch: pytest.MonkeyPatch
) -> DatabaseResource:
    make_settings(db_url)
    monkeypatch.setenv("GOV_PIPELINE_SWEEP_GRACE", "60")
    apply_yaml(sessions, NOTICE)
    return DatabaseResource(url=db_url)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def tick(
    database: DatabaseResource, instance: dg.DagsterInstance, cursor: str | None
) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"database": database}
    ) as context:
        result = sweeper_sensor(load_settings())(context)
    assert isinstance(result, dg.SensorResult)
    return result


def age(sessions: sessionmaker[Session], ids: list[int], seconds: float = 3600) -> None:
    with sessions.begin() as session:
        session.execute(
            update(EntityChange)
            .where(EntityChange.id.in_(ids))
            .values(created_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


def requested_ids(result: dg.SensorResult) -> list[int]:
    return sorted(
        i
        for r in result.run_requests or []
        for i in r.run_config["ops"]["load_changes"]["config"]["change_ids"]
    )


def test_sweeper_scenarios(
    database: DatabaseResource, sessions: sessionmaker[Session], instance: dg.DagsterInstance
) -> None:
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")  # changes 1 (created), 2 (in_review)
    # Within the grace window: left to the change sensor.
    fresh = tick(database, instance, None)
    assert not fresh.run_requests and fresh.skip_reason is not None
    assert "No stranded changes older than 60s" in fresh.skip_reason.skip_message
    # Stranded: one run per change while few, new run keys per sweep, tagged.
    age(sessions, [1, 2])
    first = tick(database, instance, fresh.cursor)
    assert requested_ids(first) == [1, 2]
    assert [r.run_key for r in first.run_requests or []] == ["sweep-1-change-1", "sweep-1-change-2"]
    assert all(r.tags[SWEEP_TAG] == "1" and r.tags["gov/queue"] == "policy"
               for r in first.run_requests or [])  # fmt: skip
    assert SweepCursor.decode(first.cursor).tries == {1: 1, 2: 1}
    # A run still running holds change 2; only change 1 is swept again.
    instance.create_run_for_job(
        job_def=process_changes,
        run_config={"ops": {"load_changes": {"config": {"change_ids": [2]}}}},
        status=dg.DagsterRunStatus.STARTED,
    )
    second = tick(database, instance, first.cursor)
    assert requested_ids(second) == [1]
    assert [r.run_key for r in second.run_requests or []] == ["sweep-2-change-1"]
    # Change 1 processed by a swept run: the engine runs it, the sweeper forgets it.
    request = (second.run_requests or [])[0]
    result = process_changes.execute_in_process(
        run_config=request.run_config, resources={"database": database}
    )
    assert result.success
    assert count(sessions, ProcessedChange, ProcessedChange.change_id == 1) == 1
    third = tick(database, instance, second.cursor)
    assert not third.run_requests and third.skip_reason is not None
    assert "(1 unprocessed, 1 held by runs)" in third.skip_reason.skip_message
    assert SweepCursor.decode(third.cursor).tries == {2: 1}
    # Change 1 is processed and old: later ticks start after it.
    assert SweepCursor.decode(third.cursor).after == 1


def test_a_change_is_swept_at_most_max_sweeps_times(
    database: DatabaseResource, sessions: sessionmaker[Session], instance: dg.DagsterInstance
) -> None:
    new_policy(sessions)
    age(sessions, [1])
    cursor = None
    for sweep in range(1, MAX_SWEEPS + 1):
        result = tick(database, instance, cursor)
        assert [r.run_key for r in result.run_requests or []] == [f"sweep-{sweep}-change-1"]
        cursor = result.cursor
    done = tick(database, instance, cursor)
    assert not done.run_requests and done.skip_reason is not None
    assert f"Gave up on 1 change(s) after {MAX_SWEEPS} sweeps: 1" in done.skip_reason.skip_message


def test_the_sweeper_starts_over_when_the_database_went_back(
    database: DatabaseResource,
    sessions: sessionmaker[Session],
    instance: dg.DagsterInstance,
    engine: Engine,
) -> None:
    """Restored to an earlier point, the database hands out ids the sweeper had settled;
    the sweeper notices its anchor is gone and looks from the start again."""
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")  # changes 1, 2
    age(sessions, [1, 2])
    result = process_changes.execute_in_process(
        run_config={"ops": {"load_changes": {"config": {"change_ids": [1, 2]}}}},
        resources={"database": database},
    )
    assert result.success
    settled = SweepCursor.decode(tick(database, instance, None).cursor)
    assert (settled.after, settled.anchor is not None) == (2, True)
    restore_to_before(engine, 2)
    new_policy(sessions, title="Written after the restore")  # change 2 again, unprocessed
    age(sessions, [2])
    swept = tick(database, instance, settled.encode())
    assert requested_ids(swept) == [2]
    assert SweepCursor.decode(swept.cursor).after == 1
