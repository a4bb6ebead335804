"""The change sensor and the run failure sensor, built from the settings the composition
root passes in (definitions.py); nothing is read at import."""

# No "from __future__ import annotations": Dagster reads the sensors' annotations at runtime.

import dagster as dg

from gov_pipeline.config import Settings
from gov_pipeline.coordinator.queue import WORKER_DIED_TAG
from gov_pipeline.domain.batching import PlannedRun, compact_ids
from gov_pipeline.orchestration.common import LANE_TAG, daemon_interval
from gov_pipeline.orchestration.processing import (
    change_ids_of_run,
    process_changes,
    processing_sensor,
)
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners.requests import request_runs
from gov_pipeline.runners.retries import fail_pending_executions

ENTITY_TAG = "gov/entity"  # the ordering tag: one run at a time per entity


def run_request(run: PlannedRun) -> dg.RunRequest:
    """The Dagster run request of a planned run: its changes as config, what it is about as
    tags (the ordering tag gov/entity `<type>:<id>`, the lane of its entity type, the
    priority)."""
    entities = run.entity_keys
    tenants = sorted({t for t, _, _ in entities})
    entity = f"{entities[0][1]}:{entities[0][2]}" if len(entities) == 1 else "multiple"
    return dg.RunRequest(
        run_key=run.run_key,
        run_config={"ops": {"load_changes": {"config": {"change_ids": run.change_ids}}}},
        tags={
            ENTITY_TAG: entity,
            "gov/tenant_id": tenants[0] if len(tenants) == 1 else "multiple",
            "gov/change_ids": compact_ids(run.change_ids),
            "gov/changes": str(len(run.change_ids)),
            LANE_TAG: run.lane,
            "dagster/priority": str(run.priority),
        },
    )


def change_sensor(settings: Settings) -> dg.SensorDefinition:
    """`entity_change_sensor`, ticking every `settings.sensor_interval_s`."""

    @processing_sensor(
        "entity_change_sensor",
        settings.sensor_interval_s,
        "Reads the change table with the commit-safe reader and requests runs: one per "
        "change while the backlog is small, batches (a record's changes together, in order; "
        "one lane per run) "
        "when it grows.",
    )
    def entity_change_sensor(
        context: dg.SensorEvaluationContext, database: DatabaseResource
    ) -> dg.SensorResult:
        tick = request_runs(database.sessions(), context.cursor, database.settings())
        if tick.skip_reason is not None:
            return dg.SensorResult(skip_reason=dg.SkipReason(tick.skip_reason), cursor=tick.cursor)
        context.log.info(tick.summary)
        requests = [run_request(r) for r in tick.runs]
        return dg.SensorResult(run_requests=requests, cursor=tick.cursor)

    return entity_change_sensor


def run_failure_sensor(settings: Settings) -> dg.SensorDefinition:
    """`processing_failure_sensor`: a processing run that failed for good fails its pending
    executions."""

    @dg.run_failure_sensor(
        name="processing_failure_sensor",
        monitored_jobs=[process_changes],
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=daemon_interval(settings.sensor_interval_s),
        description="When a processing run fails for good, its pending executions fail with "
        "the run's error and their workflow owners are told. A run whose worker died leaves "
        "them pending: the sweeper requests a new run for its changes.",
    )
    def processing_failure_sensor(
        context: dg.RunFailureSensorContext, database: DatabaseResource
    ) -> None:
        run = context.dagster_run
        if run.tags.get("dagster/will_retry") == "true":
            context.log.info(
                f"run {run.run_id} failed and will be retried; executions left pending"
            )
            return
        if run.tags.get(WORKER_DIED_TAG) == run.run_id:
            # Nothing was wrong with the executions: their worker died. The changes stay
            # unprocessed and the sweeper requests a new run for them after its grace period.
            context.log.info(
                f"run {run.run_id} failed because its worker died; executions left pending "
                "for the sweeper"
            )
            return
        message = context.failure_event.message or "run failed"
        reason = f"Dagster run {run.run_id} failed: {message}"
        failed = fail_pending_executions(
            database.sessions(), change_ids_of_run(run.run_config), reason
        )
        context.log.info(f"run {run.run_id}: failed {len(failed)} pending execution(s) {failed}")

    return processing_failure_sensor
