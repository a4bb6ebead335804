"""The main job, `process_changes`: load changes → match workflows → execute actions →
record outcome. Each op calls one function of runners/batch.py and attaches what it did as
metadata; the sync path (`process --sync`) composes the same steps."""

# No "from __future__ import annotations": Dagster reads op and config annotations at runtime.

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from gov_pipeline.domain.batching import compact_ids
from gov_pipeline.orchestration.common import (
    LANE_TAG,
    daemon_interval,
    lane_retries,
    log_executions,
    permanent_errors,
    refuse_if_run_fenced,
    retry_requested,
    run_rule,
)
from gov_pipeline.orchestration.heartbeat import beating_in_process_executor
from gov_pipeline.orchestration.outcome import report_outcome
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners.batch import (
    BatchReport,
    execute_planned,
    match_planned,
    plan_run,
    summarize_outcome,
)


class ChangesConfig(dg.Config):
    """The changes a run processes (the sensor fills this in)."""

    change_ids: list[int]


@dg.op
@lane_retries
def load_changes(
    context: dg.OpExecutionContext, config: ChangesConfig, database: DatabaseResource
) -> list[int]:
    """The run's changes not yet processed, preceded by any earlier unprocessed change of the
    same records (catch-up), in commit order."""
    refuse_if_run_fenced(context, database)
    with permanent_errors():
        plan = plan_run(database.sessions(), config.change_ids)
    context.add_output_metadata(
        {
            "changes": len(plan.todo),
            "change_ids": compact_ids(plan.todo),
            "catch_up": dg.MetadataValue.text(compact_ids(plan.catch_up) or "none"),
            "already_processed": dg.MetadataValue.text(compact_ids(plan.already) or "none"),
            "entities": dg.MetadataValue.text(", ".join(plan.entities[:50])),
        }
    )
    return plan.todo


@dg.op
@lane_retries
def match_workflows(
    context: dg.OpExecutionContext, database: DatabaseResource, change_ids: list[int]
) -> list[int]:
    """Evaluate every candidate workflow's conditions; create the executions (once)."""
    refuse_if_run_fenced(context, database)
    summary = match_planned(database.sessions(), change_ids, database.settings())
    context.add_output_metadata(
        {
            "workflows_matched": dg.MetadataValue.json(dict(summary.matched)),
            "conditions_failed": dg.MetadataValue.json(summary.conditions_failed),
            "refused": dg.MetadataValue.json(summary.refused),
            "executions_to_run": summary.executions,
        }
    )
    return change_ids


@dg.op
@lane_retries
def execute_actions(
    context: dg.OpExecutionContext, database: DatabaseResource, change_ids: list[int]
) -> list[int]:
    """Run the pending executions (and approval follow-ups) of the changes, in order, and
    mark each change processed with its effects.

    Changes run in chunks, one transaction each. A failed attempt is counted on its
    execution in the database; one that failed for good (a permanent error, or the attempts
    of the run's lane used up) is failed, its owner told, and the run moves on. Otherwise
    the op is retried, and the retry starts after what is done.
    """
    refuse_if_run_fenced(context, database)
    with permanent_errors():  # (a run another worker ended and fenced, too)
        report = execute_planned(
            database.sessions(), change_ids, database.settings(),
            max_attempts=run_rule(context).retry.max_attempts,
            run_id=context.run_id, processed_by=f"dagster:{context.run_id}",
        )  # fmt: skip
    if report.retry is not None:
        raise retry_requested(context, report.retry)
    log_executions(context, report.ran)
    context.add_output_metadata(_execution_metadata(report))
    return change_ids


def _execution_metadata(report: BatchReport) -> dict[str, Any]:
    actions: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for ran in report.ran:
        statuses[ran.status] += 1
        actions.update(step.split(".")[-1] if "." in step else step for step in ran.actions)
    return {
        "changes_processed": len(report.changes),
        "executions_run": sum(statuses.values()),
        "executions_by_status": dg.MetadataValue.json(dict(statuses)),
        "actions_run": dg.MetadataValue.json(dict(actions)),
        "transactions": report.commits,
        "failed_attempts": report.failures,
    }


@dg.op
@lane_retries  # delivery and the summary are safe to repeat
def record_outcome(
    context: dg.OpExecutionContext, database: DatabaseResource, change_ids: list[int]
) -> None:
    """Send queued webhooks, summarise the executions of the run's changes, and say how the
    run's workflows ended (tags, ERROR events; the run fails when one of them failed)."""
    refuse_if_run_fenced(context, database)
    outcome = summarize_outcome(database.sessions(), database.settings(), change_ids)
    metadata = {
        "executions_by_status": dg.MetadataValue.json(outcome.executions_by_status),
        "webhooks_delivered": outcome.webhooks_delivered,
        "webhooks_failed": outcome.webhooks_failed,
    }
    report_outcome(context, database, metadata)


@dg.job(
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "policy"},
    description="Process captured changes of the governed records: load → match workflows → "
    "run actions → record.",
)
def process_changes() -> None:
    record_outcome(execute_actions(match_workflows(load_changes())))


def change_ids_of_run(run_config: Mapping[str, Any]) -> list[int]:
    """The change ids a process_changes run was given (empty if none)."""
    try:
        ids = run_config["ops"]["load_changes"]["config"]["change_ids"]
    except (KeyError, TypeError):
        return []
    return [int(i) for i in ids] if isinstance(ids, list) else []


def processing_sensor(
    name: str, interval_s: int, description: str
) -> Callable[[Callable[..., Any]], dg.SensorDefinition]:
    """The decorator of a sensor that requests `process_changes` runs every
    `interval_s` seconds (on the daemon's loop), running by default."""
    return dg.sensor(
        name=name,
        job=process_changes,
        minimum_interval_seconds=daemon_interval(interval_s),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
    )
