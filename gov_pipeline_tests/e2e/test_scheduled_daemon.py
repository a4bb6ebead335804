"""A `scheduled` workflow fired by a real `dagster-daemon` at a real minute tick: the sensor
ticks on the daemon's loop, writes one execution per matching record under the tick's key,
and requests their runs (lane, ordering tag, run key) from the instance. No clock is
mocked: the test waits for the next minute (bounded)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gov_pipeline.config import load_settings
from gov_pipeline.db.engine import make_engine, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS
from gov_pipeline.db.migrate import upgrade
from gov_pipeline.db.models import WorkflowExecution
from gov_pipeline.embedded.instance import dagster_env, embedded_dagster_home
from gov_pipeline.embedded.processes import running_daemon
from gov_pipeline.services import tenants
from gov_pipeline_tests.integration.engine_support import apply_yaml, new_policy

pytestmark = pytest.mark.e2e

EVERY_MINUTE = """
name: Minute digest
tenant_id: acme
type: notification
trigger: scheduled
schedule: {cron: "* * * * *", timezone: Europe/Berlin}
conditions: {field: entity.status, op: eq, value: published}
actions: [{type: notify, include_owner: true, title: "Digest: {entity.title}"}]
"""
SENSOR = "scheduled_workflows_sensor"
# The daemon's start: ~15 s on an idle 2-core machine, a minute when it is busy.
START_TIMEOUT_S = 150
# From the sensor's first evaluation: the next minute (<= 60 s) and two sensor intervals.
TICK_TIMEOUT_S = 75
RUNS_TIMEOUT_S = 30


def _scheduled(sessions) -> list[tuple[str, str, str | None]]:  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        rows = session.execute(
            select(
                WorkflowExecution.dedupe_key,
                WorkflowExecution.status,
                WorkflowExecution.dagster_run_id,
            )
            .where(WorkflowExecution.dedupe_key.like("scheduled:%"))
            .order_by(WorkflowExecution.id)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def _sensor_has_run(dagster_home: Path) -> bool:
    """Whether the daemon has evaluated the sensor once (its cursor is kept)."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        return any(
            state.name == SENSOR and state.instigator_data is not None
            and getattr(state.instigator_data, "cursor", None)
            for state in instance.all_instigator_state()
        )  # fmt: skip


def _requested(dagster_home: Path) -> dict[int, Any]:
    """The runs of run_scheduled_workflows, by the execution id each was given."""
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs(RunsFilter(job_name="run_scheduled_workflows"))
    config = "ops", "run_scheduled", "config", "execution_ids"
    by_execution = {}
    for run in runs:
        ids: Any = run.run_config
        for key in config:
            ids = ids[key]
        by_execution.update(dict.fromkeys(ids, run))
    return by_execution


def _wait(predicate, timeout_s: float, what: str, log: Path) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tail}")


def test_the_daemon_fires_a_scheduled_workflow_at_a_real_minute_tick(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = load_settings({"GOV_PIPELINE_HOME": str(home)})
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine, tenant=ALL_TENANTS)
    with sessions.begin() as session:
        tenants.create_tenant(session, tenant_id="acme")
        tenants.upsert_user(session, tenant_id="acme", user_id="olivia", roles=["policy_owner"])
    published = [new_policy(sessions, status="published", title=f"P{i}") for i in range(2)]
    new_policy(sessions, title="A draft")  # its conditions are false: no execution
    apply_yaml(sessions, EVERY_MINUTE)
    dagster_home = embedded_dagster_home(settings)
    env = dagster_env(settings, dagster_home, {"GOV_PIPELINE_SCHEDULED_INTERVAL": "5"})
    log = home / "daemon.log"
    before = datetime.now(UTC)
    try:
        with running_daemon(env, log):
            started = _wait(lambda: _sensor_has_run(dagster_home), START_TIMEOUT_S, SENSOR, log)
            waited = _wait(lambda: len(_scheduled(sessions)) >= 2, TICK_TIMEOUT_S, "a tick", log)
            # The sensor requests the runs in the same daemon tick: they are in run storage
            # (queued or further; on a busy machine they may take minutes to complete).
            _wait(lambda: len(_requested(dagster_home)) >= 2, RUNS_TIMEOUT_S, "the runs", log)
            requested = _requested(dagster_home)
    finally:
        engine.dispose()
    found = _scheduled(sessions)
    ticks = {key.split(":", 1)[1].rsplit(":policy:", 1)[0] for key, _, _ in found[:2]}
    assert len(ticks) == 1, found
    tick = datetime.strptime(ticks.pop(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    # A real minute tick after the daemon came up: nothing from before was caught up.
    assert tick > before and tick.second == 0, (tick, before)
    assert [key.rsplit(":", 1)[1] for key, _, _ in found[:2]] == [str(p) for p in published]
    with sessions.begin() as session:
        first_ids = list(
            session.scalars(select(WorkflowExecution.id).order_by(WorkflowExecution.id).limit(2))
        )
    for execution_id, policy_id in zip(first_ids, published, strict=True):
        run = requested[execution_id]
        assert run.tags["gov/entity"] == f"policy:{policy_id}" and run.tags["gov/queue"] == "policy"
        assert run.tags["dagster/sensor_name"] == SENSOR
        assert run.tags["dagster/run_key"] == f"scheduled-execution-{execution_id}"
    print(
        f"daemon up and sensor evaluated after {started:.1f}s; tick executions {waited:.1f}s later"
    )
