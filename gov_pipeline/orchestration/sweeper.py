"""The sweeper sensor: runs for changes no run will process (runners/sweep.py decides
which; this reads which changes Dagster's waiting and running runs hold, and turns the plan
into run requests). Built from the settings definitions.py passes in."""

# No "from __future__ import annotations": Dagster reads the sensor's annotations at runtime.

import dagster as dg

from gov_pipeline.config import Settings
from gov_pipeline.orchestration.processing import (
    change_ids_of_run,
    process_changes,
    processing_sensor,
)
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.orchestration.sensors import run_request
from gov_pipeline.runners.sweep import plan_sweep

SWEEP_TAG = "gov/sweep"
WAITING_OR_RUNNING = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def held_change_ids(instance: dg.DagsterInstance) -> set[int]:
    """Change ids given to process_changes runs that are still waiting or running."""
    runs = instance.get_runs(
        dg.RunsFilter(job_name=process_changes.name, statuses=WAITING_OR_RUNNING)
    )
    return {i for run in runs for i in change_ids_of_run(run.run_config)}


def sweeper_sensor(settings: Settings) -> dg.SensorDefinition:
    """`unprocessed_change_sweeper`, ticking every `settings.sweep_interval_s`."""

    @processing_sensor(
        "unprocessed_change_sweeper",
        settings.sweep_interval_s,
        "Requests runs for committed changes that stayed unprocessed past the grace period "
        "and that no waiting or running run holds (their runs failed for good).",
    )
    def unprocessed_change_sweeper(
        context: dg.SensorEvaluationContext, database: DatabaseResource
    ) -> dg.SensorResult:
        held = held_change_ids(context.instance)
        plan = plan_sweep(database.sessions(), context.cursor, held, database.settings())
        if plan.warning:
            context.log.warning(plan.warning)
        if plan.skip_reason is not None:
            return dg.SensorResult(skip_reason=dg.SkipReason(plan.skip_reason), cursor=plan.cursor)
        requests = []
        for planned in plan.runs:
            base = run_request(planned)
            requests.append(
                dg.RunRequest(
                    # A new key per sweep: the key of a run that failed would block a retry.
                    run_key=f"sweep-{plan.sweep}-{planned.run_key}",
                    run_config=base.run_config,
                    tags={**base.tags, SWEEP_TAG: str(plan.sweep)},
                )
            )
        context.log.info(plan.summary)
        return dg.SensorResult(run_requests=requests, cursor=plan.cursor)

    return unprocessed_change_sweeper
