"""`scheduled` workflows on Dagster: the sensor that fires them at their cron ticks
(runners/scheduled_triggers.py decides what is due and writes the executions) and the job
that runs the executions it requests. Built from the settings definitions.py passes in."""

# No "from __future__ import annotations": Dagster reads op, config and sensor annotations
# at runtime.

import dagster as dg

from gov_pipeline.config import Settings
from gov_pipeline.orchestration.common import (
    LANE_TAG,
    MAX_ATTEMPTS,
    POLICY_RETRY,
    daemon_interval,
    log_executions,
)
from gov_pipeline.orchestration.heartbeat import beating_in_process_executor
from gov_pipeline.orchestration.outcome import report_outcome
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.orchestration.sensors import run_request
from gov_pipeline.runners.scheduled_triggers import (
    ScheduledRun,
    fire_scheduled_workflows,
    run_scheduled_executions,
)

TICK_TAG = "gov/scheduled_tick"
WORKFLOW_TAG = "gov/scheduled_workflow"
# Tags of change runs that do not apply: a scheduled run holds executions, not changes.
CHANGE_TAGS = ("gov/change_ids", "gov/changes")


class ScheduledExecutionsConfig(dg.Config):
    """The scheduled executions a run runs (the sensor fills this in)."""

    execution_ids: list[int]


@dg.op(retry_policy=POLICY_RETRY)
def run_scheduled(
    context: dg.OpExecutionContext, config: ScheduledExecutionsConfig, database: DatabaseResource
) -> None:
    """Run the pending ones of the executions, in order; a retry runs what is still pending."""
    report = run_scheduled_executions(
        database.sessions(), database.settings(), config.execution_ids,
        max_attempts=MAX_ATTEMPTS, run_id=context.run_id,
    )  # fmt: skip
    log_executions(context, report.ran)
    actions = {str(r.execution_id): r.actions for r in report.ran}
    metadata = {
        "executions_run": len(report.ran),
        "not_run": dg.MetadataValue.json(report.not_run),
        "actions_run": dg.MetadataValue.json(actions),
    }
    report_outcome(context, database, metadata)


@dg.job(
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "policy"},
    description="Run the executions of a scheduled workflow's tick (config: execution_ids).",
)
def run_scheduled_workflows() -> None:
    run_scheduled()


def scheduled_run_request(run: ScheduledRun) -> dg.RunRequest:
    """The run request of a planned run: the tags of a change run (the ordering tag
    gov/entity, the lane of the entity type, the priority), its tick and workflow."""
    base = run_request(run.planned)
    tags = {k: v for k, v in base.tags.items() if k not in CHANGE_TAGS}
    return dg.RunRequest(
        run_key=run.run_key,
        run_config={"ops": {"run_scheduled": {"config": {"execution_ids": run.execution_ids}}}},
        tags={**tags, TICK_TAG: run.tick, WORKFLOW_TAG: run.workflow[:200]},
    )


def scheduled_sensor(settings: Settings) -> dg.SensorDefinition:
    """`scheduled_workflows_sensor`, ticking every `settings.scheduled_interval_s`."""

    @dg.sensor(
        name="scheduled_workflows_sensor",
        job=run_scheduled_workflows,
        minimum_interval_seconds=daemon_interval(settings.scheduled_interval_s),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Fires `scheduled` workflows at their cron ticks (in their time zones): "
        "one execution per matching record per tick, then runs for them. A new workflow "
        "starts from now; after a pause only the latest missed tick fires.",
    )
    def scheduled_workflows_sensor(
        context: dg.SensorEvaluationContext, database: DatabaseResource
    ) -> dg.SensorResult:
        tick = fire_scheduled_workflows(database.sessions(), context.cursor, database.settings())
        for warning in tick.warnings:
            context.log.warning(warning)
        if tick.skip_reason is not None:
            return dg.SensorResult(skip_reason=dg.SkipReason(tick.skip_reason), cursor=tick.cursor)
        context.log.info(tick.summary)
        requests = [scheduled_run_request(r) for r in tick.runs]
        return dg.SensorResult(run_requests=requests, cursor=tick.cursor)

    return scheduled_workflows_sensor
