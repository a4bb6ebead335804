"""Scheduled workflows on both databases: a tick writes one execution per matching record,
a tick evaluated again writes nothing, the next tick writes new ones, a pause fires only the
latest tick; the sensor's run requests (lanes, ordering tag, batches) and the job that runs
them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.models import Notification, Workflow, WorkflowExecution
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.orchestration.scheduled_triggers import run_scheduled_workflows, scheduled_sensor
from gov_pipeline.runners.scheduled_triggers import (
    ScheduleCursor,
    ScheduledTick,
    fire_scheduled_workflows,
    run_scheduled_executions,
)
from gov_pipeline.services import policies, records
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import apply_yaml, make_settings, new_policy

DIGEST = (
    Path(__file__).resolve().parents[2] / "examples/workflows/weekly_review_digest.yaml"
).read_text()
# Mondays at 09:00 in Berlin (summer time): 07:00 UTC.
MONDAY_1 = datetime(2025, 3, 31, 7, tzinfo=UTC)
MONDAY_2 = MONDAY_1 + timedelta(days=7)
MONDAY_4 = MONDAY_1 + timedelta(days=21)

RISK_SWEEP = """
name: Operational risk sweep
tenant_id: acme
type: notification
trigger: scheduled
entity_type: risk
priority: 3
schedule: {cron: "* * * * *"}
conditions: {field: entity.category, op: eq, value: operational}
actions: [{type: notify, include_owner: true, title: "Look at {entity.title}"}]
"""


@pytest.fixture
def settings(db_url: str, sessions: sessionmaker[Session], tenant: str) -> Settings:
    with sessions.begin() as session:
        for tenant_id in ("acme", "globex"):
            upsert_user(session, tenant_id=tenant_id, user_id="olivia", roles=["policy_owner"])
    return make_settings(db_url)


@pytest.fixture
def digest_policies(sessions: sessionmaker[Session], settings: Settings) -> dict[str, int]:
    """Acme's policies around the digest's 30-day window, a draft, a deleted one, and one of
    another tenant; the digest applied."""

    def published(review: date, tenant: str = "acme") -> int:
        return new_policy(sessions, tenant, status="published", next_review_date=review)

    made = {
        "soon": published(date(2025, 4, 10)),
        "edge": published(date(2025, 4, 30)),
        "later": published(date(2025, 5, 15)),
        "draft": new_policy(sessions, next_review_date=date(2025, 4, 10)),
        "deleted": published(date(2025, 4, 10)),
        "globex": published(date(2025, 4, 10), tenant="globex"),
    }
    with sessions.begin() as session:
        policies.soft_delete_policy(session, tenant_id="acme", policy_id=made["deleted"])
    apply_yaml(sessions, DIGEST)
    return made


def fire(
    sessions: sessionmaker[Session], settings: Settings, cursor: str | None, now: datetime
) -> ScheduledTick:
    return fire_scheduled_workflows(sessions, cursor, settings, now=now)


def scheduled_executions(sessions: sessionmaker[Session]) -> list[tuple[str, str, str]]:
    """(dedupe key, entity id, status) of every scheduled execution, in id order."""
    with sessions.begin() as session:
        rows = session.execute(
            select(
                WorkflowExecution.dedupe_key, WorkflowExecution.entity_id, WorkflowExecution.status
            )
            .where(WorkflowExecution.dedupe_key.like("scheduled:%"))
            .order_by(WorkflowExecution.id)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def keys(tick: datetime, *ids: int) -> list[str]:
    day = tick.strftime("%Y-%m-%dT%H:%M:%SZ")
    return [f"scheduled:{day}:policy:{i}" for i in ids]


def test_a_tick_writes_one_execution_per_matching_record_once(
    sessions: sessionmaker[Session], settings: Settings, digest_policies: dict[str, int]
) -> None:
    p = digest_policies
    # First look: the workflow starts now; nothing from before is caught up.
    first = fire(sessions, settings, None, MONDAY_1 - timedelta(minutes=1))
    assert first.runs == [] and scheduled_executions(sessions) == []
    assert first.skip_reason is not None and "no backfill" in first.skip_reason
    assert "'Weekly review digest' at 2025-03-31T07:00:00Z" in first.skip_reason

    # 09:00:04 in Berlin: the published acme policies due within 30 days of Monday.
    tick = fire(sessions, settings, first.cursor, MONDAY_1 + timedelta(seconds=4))
    assert [k for k, _, _ in scheduled_executions(sessions)] == keys(MONDAY_1, p["soon"], p["edge"])
    assert "2 of 3 policy record(s) matched, 2 execution(s) written, 2 to run" in tick.summary
    assert [run.planned.lane for run in tick.runs] == ["policy", "policy"]
    assert [run.planned.entity_keys for run in tick.runs] == [
        [("acme", "policy", str(p["soon"]))],
        [("acme", "policy", str(p["edge"]))],
    ]
    run_keys = [run.run_key for run in tick.runs]
    assert len(set(run_keys)) == 2 and all(k.startswith("scheduled-execution-") for k in run_keys)

    # The same tick again from the same cursor (a sensor tick that died before Dagster kept
    # its cursor, or a second sensor): nothing new, the same runs requested again.
    again = fire(sessions, settings, first.cursor, MONDAY_1 + timedelta(seconds=19))
    assert len(scheduled_executions(sessions)) == 2
    assert [run.run_key for run in again.runs] == run_keys
    assert "0 execution(s) written, 2 to run" in again.summary

    # From the new cursor, nothing is due until next Monday.
    quiet = fire(sessions, settings, tick.cursor, MONDAY_1 + timedelta(seconds=34))
    assert quiet.runs == [] and quiet.skip_reason is not None
    assert "next, 'Weekly review digest' at 2025-04-07T07:00:00Z" in quiet.skip_reason


def test_executions_a_dead_tick_wrote_get_runs_even_when_a_later_tick_fires(
    sessions: sessionmaker[Session], settings: Settings, digest_policies: dict[str, int]
) -> None:
    p = digest_policies
    first = fire(sessions, settings, None, MONDAY_1 - timedelta(minutes=1))
    # This evaluation wrote its executions, then died: Dagster never kept its cursor.
    fire(sessions, settings, first.cursor, MONDAY_1 + timedelta(seconds=4))
    # The daemon comes back a week later, from the old cursor: Monday 2 fires (Monday 1
    # counts as missed), and the runs cover Monday 1's executions too, which no run holds.
    later = fire(sessions, settings, first.cursor, MONDAY_2 + timedelta(seconds=4))
    assert "(the latest of 2 ticks missed)" in later.summary
    found = scheduled_executions(sessions)
    assert [k for k, _, _ in found] == keys(MONDAY_1, p["soon"], p["edge"]) + keys(
        MONDAY_2, p["soon"], p["edge"]
    )
    with sessions.begin() as session:
        every = list(session.scalars(select(WorkflowExecution.id).order_by(WorkflowExecution.id)))
    assert sorted(i for run in later.runs for i in run.execution_ids) == every


def test_the_facts_of_a_scheduled_execution_are_the_current_row(
    sessions: sessionmaker[Session], settings: Settings, digest_policies: dict[str, int]
) -> None:
    first = fire(sessions, settings, None, MONDAY_1 - timedelta(minutes=1))
    fire(sessions, settings, first.cursor, MONDAY_1 + timedelta(seconds=4))
    with sessions.begin() as session:
        execution = session.scalars(
            select(WorkflowExecution).order_by(WorkflowExecution.id)
        ).first()
        assert execution is not None
        facts: dict[str, Any] = dict(execution.input or {})
    assert facts["trigger"] == "scheduled" and facts["old"] == {} and facts["changed"] == []
    assert facts["new"] == facts["entity"] and facts["entity"]["status"] == "published"
    assert facts["entity"]["id"] == digest_policies["soon"] and "content" not in facts["entity"]


def test_running_the_executions_notifies_once_and_the_next_ticks_write_new_ones(
    sessions: sessionmaker[Session], settings: Settings, digest_policies: dict[str, int]
) -> None:
    p = digest_policies
    first = fire(sessions, settings, None, MONDAY_1 - timedelta(minutes=1))
    tick = fire(sessions, settings, first.cursor, MONDAY_1 + timedelta(seconds=4))
    ids = [i for run in tick.runs for i in run.execution_ids]
    done = run_scheduled_executions(sessions, settings, ids, max_attempts=3, run_id="run-1")
    assert [r.status for r in done.ran] == ["completed", "completed"] and done.not_run == []
    replay = run_scheduled_executions(sessions, settings, ids, max_attempts=3, run_id="run-2")
    assert replay.ran == [] and replay.not_run == ids
    with sessions.begin() as session:
        titles = sorted(session.scalars(select(Notification.title)))
    assert titles == ["Review coming up: Access control"] * 2

    # Next Monday: new executions, under the new tick's keys.
    second = fire(sessions, settings, tick.cursor, MONDAY_2 + timedelta(seconds=9))
    assert len(second.runs) == 2
    found = [k for k, _, _ in scheduled_executions(sessions)]
    assert found == keys(MONDAY_1, p["soon"], p["edge"]) + keys(MONDAY_2, p["soon"], p["edge"])

    # The sensor down for two weeks: only the latest missed Monday fires, once.
    late = fire(sessions, settings, second.cursor, MONDAY_4 + timedelta(hours=3))
    assert "tick 2025-04-21T07:00:00Z (the latest of 2 ticks missed)" in late.summary
    found = [k for k, _, _ in scheduled_executions(sessions)]
    assert found[4:] == keys(MONDAY_4, p["edge"], p["later"])
    assert not any("2025-04-14" in k for k in found)


def test_an_inactive_workflow_does_not_fire_and_starts_afresh_when_active_again(
    sessions: sessionmaker[Session], settings: Settings, digest_policies: dict[str, int]
) -> None:
    first = fire(sessions, settings, None, MONDAY_1 - timedelta(minutes=1))
    apply_yaml(sessions, DIGEST, status="inactive")
    off = fire(sessions, settings, first.cursor, MONDAY_1 + timedelta(seconds=4))
    assert off.skip_reason == "No active scheduled workflows."
    assert ScheduleCursor.decode(off.cursor).handled == {}
    apply_yaml(sessions, DIGEST)
    back = fire(sessions, settings, off.cursor, MONDAY_1 + timedelta(seconds=19))
    assert back.runs == [] and scheduled_executions(sessions) == []


@pytest.fixture
def risks(sessions: sessionmaker[Session], settings: Settings) -> list[int]:
    made = []
    with sessions.begin() as session:
        for i, category in enumerate(["operational"] * 5 + ["financial"]):
            fields = {"title": f"Risk {i}", "category": category, "owner_id": "olivia"}
            made.append(records.create_record(session, "risk", tenant_id="acme", fields=fields).id)
    apply_yaml(sessions, RISK_SWEEP)
    return made


def test_the_sensor_requests_batched_runs_on_the_lane_and_the_job_runs_them(
    db_url: str,
    sessions: sessionmaker[Session],
    risks: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOV_PIPELINE_BATCH_THRESHOLD", "2")
    monkeypatch.setenv("GOV_PIPELINE_BATCH_SIZE", "3")
    database = DatabaseResource(url=db_url)
    sensor = scheduled_sensor(database.settings())
    # The cursor as a tick two minutes ago left it: the latest minute tick is due now.
    with sessions.begin() as session:
        wid = session.scalars(select(Workflow.id)).one()
    cursor = ScheduleCursor({wid: datetime.now(UTC) - timedelta(minutes=2)}).encode()
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"database": database}
        ) as context,
    ):
        result = sensor(context)
        assert isinstance(result, dg.SensorResult) and result.run_requests is not None
        requests = list(result.run_requests)
        # Five operational risks, batches of at most three, on the risk lane.
        sizes = [
            len(r.run_config["ops"]["run_scheduled"]["config"]["execution_ids"]) for r in requests
        ]
        assert sorted(sizes) == [2, 3]
        for request in requests:
            assert request.tags["gov/queue"] == "assessment"
            assert request.tags["gov/entity"] == "multiple"
            assert request.tags["dagster/priority"] == "3"
            assert request.tags["gov/scheduled_workflow"] == "Operational risk sweep"
            assert "gov/change_ids" not in request.tags
        runs = [
            run_scheduled_workflows.execute_in_process(
                run_config=request.run_config, resources={"database": database},
                instance=instance, tags=request.tags,
            )
            for request in requests
        ]  # fmt: skip
        assert all(run.success for run in runs)
        assert {instance.get_run_by_id(r.run_id).tags["gov/outcome"] for r in runs} == {"ok"}  # type: ignore[union-attr]
    statuses = [status for _, _, status in scheduled_executions(sessions)]
    assert statuses == ["completed"] * 5

    # A cursor that is not this sensor's: every workflow starts from now, with a warning.
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            instance=instance, cursor="not json", resources={"database": database}
        ) as context,
    ):
        restart = sensor(context)
    assert isinstance(restart, dg.SensorResult) and not restart.run_requests
    assert wid in ScheduleCursor.decode(restart.cursor).handled
