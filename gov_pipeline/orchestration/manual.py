"""`execute_workflow`: one workflow for one record (a policy, a risk, ...) by hand (the
launchpad, `dagster job launch`), through runners/manual.py."""

# No "from __future__ import annotations": Dagster reads op and config annotations at runtime.

import dagster as dg

from gov_pipeline.orchestration.common import LANE_TAG, lane_retries, permanent_errors, run_rule
from gov_pipeline.orchestration.heartbeat import beating_in_process_executor
from gov_pipeline.orchestration.outcome import report_outcome
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners.manual import run_manual_workflow


class ExecuteWorkflowConfig(dg.Config):
    """Which workflow to run, for which record of its entity type (`entity_id`: a policy's
    id for a policy workflow, a risk's for a risk workflow)."""

    tenant_id: str
    workflow: str
    entity_id: int


@dg.op
@lane_retries
def run_workflow(
    context: dg.OpExecutionContext, config: ExecuteWorkflowConfig, database: DatabaseResource
) -> None:
    """Create the manual execution (once per run, a run retry's included: it is keyed by
    the first run's id) and run it."""
    with permanent_errors():
        outcome = run_manual_workflow(
            database.sessions(), database.settings(), tenant_id=config.tenant_id,
            workflow=config.workflow, entity_id=config.entity_id,
            request_key=context.run.root_run_id or context.run_id, run_id=context.run_id,
            actor=f"dagster:{context.run_id}", max_attempts=run_rule(context).retry.max_attempts,
        )  # fmt: skip
    metadata = {
        "execution_id": outcome.execution_id,
        "status": str(outcome.status),
        "reason": dg.MetadataValue.text(outcome.reason or "-"),
        "actions_run": dg.MetadataValue.json(outcome.actions),
    }
    report_outcome(context, database, metadata)


@dg.job(
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "policy"},
    description="Run one workflow for one record by hand (config: tenant_id, workflow, entity_id).",
)
def execute_workflow() -> None:
    run_workflow()
