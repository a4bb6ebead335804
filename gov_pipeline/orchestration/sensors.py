"""Sensors: policy changes become runs; failed runs fail their executions."""

from collections.abc import Iterable, Sequence

import dagster as dg
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gov_pipeline.config import load_settings
from gov_pipeline.coordinator.queue import WORKER_DIED_TAG
from gov_pipeline.db.models import EntityChange, Workflow, WorkflowExecution
from gov_pipeline.domain.batching import (
    BatchingPolicy,
    PendingChange,
    PlannedRun,
    compact_ids,
    plan_runs,
)
from gov_pipeline.domain.statuses import ExecutionStatus, WorkflowStatus
from gov_pipeline.domain.triggers import TRIGGERS_BY_KIND
from gov_pipeline.engine.failures import mark_failed
from gov_pipeline.orchestration.jobs import change_ids_of_run, process_policy_changes
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.services.changes import read_changes

QUEUE = "policy"  # the lane of the original governance:policy queue
# Read from the environment once, when the code location loads (no I/O).
_SETTINGS = load_settings()


def daemon_interval(seconds: int) -> int:
    """The `minimum_interval_seconds` that makes a sensor tick every `seconds`.

    The sensor daemon wakes every 5 s and skips a sensor whose last tick started less than
    its minimum interval ago; a loop that wakes a moment early skips it, so an interval of
    exactly 5 ticks every 10 s. One second less than wanted ticks on the intended wake-up.
    """
    return max(1, seconds - 1)


def _priorities(session: Session, tenants: Iterable[str]) -> dict[tuple[str, str], int]:
    """Highest priority of the active workflows, per (tenant, trigger)."""
    rows = session.execute(
        select(Workflow.tenant_id, Workflow.trigger, func.max(Workflow.priority))
        .where(Workflow.tenant_id.in_(list(tenants)), Workflow.status == WorkflowStatus.ACTIVE)
        .group_by(Workflow.tenant_id, Workflow.trigger)
    ).all()
    return {(tenant, trigger): int(priority or 0) for tenant, trigger, priority in rows}


def pending_changes(session: Session, changes: Sequence[EntityChange]) -> list[PendingChange]:
    """Changes with the priority of the workflows they may trigger."""
    priorities = _priorities(session, {c.tenant_id for c in changes})
    return [
        PendingChange(
            c.id, c.tenant_id, c.entity_type, c.entity_id,
            max((priorities.get((c.tenant_id, t), 0) for t in TRIGGERS_BY_KIND.get(c.kind, ())),
                default=0),
        )
        for c in changes
    ]  # fmt: skip


def run_request(run: PlannedRun) -> dg.RunRequest:
    entities = run.entity_keys
    tenants = sorted({t for t, _, _ in entities})
    return dg.RunRequest(
        run_key=run.run_key,
        run_config={"ops": {"load_changes": {"config": {"change_ids": run.change_ids}}}},
        tags={
            "gov/policy_id": entities[0][2] if len(entities) == 1 else "multiple",
            "gov/tenant_id": tenants[0] if len(tenants) == 1 else "multiple",
            "gov/change_ids": compact_ids(run.change_ids),
            "gov/changes": str(len(run.change_ids)),
            "gov/queue": QUEUE,
            "dagster/priority": str(run.priority),
        },
    )


@dg.sensor(
    job=process_policy_changes,
    minimum_interval_seconds=daemon_interval(_SETTINGS.sensor_interval_s),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Reads the change table with the commit-safe reader and requests runs: one per "
        "change while the backlog is small, batches (a policy's changes together, in order) "
        "when it grows."
    ),
)
def policy_change_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.SensorResult:
    settings = database.settings()
    sessions = database.sessions()
    with sessions.begin() as session:
        batch = read_changes(session, context.cursor, settings.sensor_max_changes)
        pending = pending_changes(session, batch.changes)
    cursor = batch.cursor.encode()
    if not pending:
        waiting = batch.cursor.pending_gap_ids
        note = (
            f"; watching {waiting} change id(s) whose transactions have not committed yet"
            if waiting
            else ""
        )
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"No new policy changes after change {batch.cursor.watermark}{note}."
            ),
            cursor=cursor,
        )
    policy = BatchingPolicy(settings.batch_threshold, settings.batch_size)
    runs = plan_runs(pending, policy)
    mode = "one run per change" if len(runs) == len(pending) else "batched"
    context.log.info(
        f"{len(pending)} change(s) {compact_ids([c.id for c in pending], 200)} -> "
        f"{len(runs)} run(s), {mode}{' (more waiting)' if batch.has_more else ''}"
    )
    return dg.SensorResult(run_requests=[run_request(r) for r in runs], cursor=cursor)


def fail_pending_executions(
    database: DatabaseResource, change_ids: list[int], reason: str
) -> list[int]:
    """Fail the still-pending executions of `change_ids` (and tell their owners)."""
    if not change_ids:
        return []
    sessions = database.sessions()
    with sessions.begin() as session:
        executions = session.scalars(
            select(WorkflowExecution)
            .where(
                WorkflowExecution.change_id.in_(change_ids),
                WorkflowExecution.status == ExecutionStatus.PENDING.value,
            )
            .with_for_update()
        ).all()
        for execution in executions:
            mark_failed(session, execution, reason)
        return [e.id for e in executions]


@dg.run_failure_sensor(
    monitored_jobs=[process_policy_changes],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=daemon_interval(_SETTINGS.sensor_interval_s),
    description="When a processing run fails for good, its pending executions fail with the "
    "run's error and their workflow owners are told. A run whose worker died leaves them "
    "pending: the sweeper requests a new run for its changes.",
)
def policy_run_failure_sensor(
    context: dg.RunFailureSensorContext, database: DatabaseResource
) -> None:
    run = context.dagster_run
    if run.tags.get("dagster/will_retry") == "true":
        context.log.info(f"run {run.run_id} failed and will be retried; executions left pending")
        return
    if run.tags.get(WORKER_DIED_TAG) == run.run_id:
        # Nothing was wrong with the executions: their worker died. The changes stay
        # unprocessed and the sweeper requests a new run for them after its grace period.
        context.log.info(
            f"run {run.run_id} failed because its worker died; executions left pending for "
            "the sweeper"
        )
        return
    message = context.failure_event.message or "run failed"
    reason = f"Dagster run {run.run_id} failed: {message}"
    failed = fail_pending_executions(database, change_ids_of_run(run.run_config), reason)
    context.log.info(f"run {run.run_id}: failed {len(failed)} pending execution(s) {failed}")
