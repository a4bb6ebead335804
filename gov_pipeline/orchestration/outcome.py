"""Every run that runs workflows says how they ended, where an operator looks: tags on the run
(`gov/outcome`, `gov/workflows`, `gov/executions`, filterable on the Runs page), an ERROR
event per failed execution naming it, its workflow, its entity and the whole reason, and a
run that fails when one of its executions failed, so the Failed tab shows it (see
docs/ui.md for why a failure and not only a red check)."""

# No "from __future__ import annotations": Dagster reads op annotations at runtime.

from typing import Any

import dagster as dg

from gov_pipeline.domain.batching import compact_ids
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners.outcomes import RunOutcomes, run_outcomes

OUTCOME_TAG = "gov/outcome"
WORKFLOWS_TAG = "gov/workflows"
EXECUTIONS_TAG = "gov/executions"
TAG_CHARS = 200  # tags are for filtering and a glance; the run's events have everything


def outcome_tags(outcomes: RunOutcomes) -> dict[str, str]:
    workflows = ", ".join(outcomes.workflows)
    if len(workflows) > TAG_CHARS:
        workflows = workflows[: TAG_CHARS - 1] + "…"
    tags = {OUTCOME_TAG: str(outcomes.outcome), WORKFLOWS_TAG: workflows or "-"}
    ids = [e.execution_id for e in outcomes.executions]
    tags[EXECUTIONS_TAG] = compact_ids(ids, TAG_CHARS) or "-"
    return tags


def report_outcome(
    context: dg.OpExecutionContext, database: DatabaseResource, metadata: dict[str, Any]
) -> None:
    """Tag the run with its governance outcome, log each failed execution as an ERROR, and
    attach `metadata` (what the op did) as the op's output metadata, or to the failure.

    Raises:
        Failure: an execution of this run failed (not retried: the failure is recorded, a
            retry is an operator's decision, e.g. the retry_executions job).
    """
    outcomes = run_outcomes(database.sessions(), context.run_id)
    context.instance.add_run_tags(context.run_id, outcome_tags(outcomes))
    failed = outcomes.failed
    for execution in failed:
        context.log.error(
            f"execution {execution.execution_id} of workflow {execution.workflow!r} on "
            f"{execution.entity} (tenant {execution.tenant_id}) failed: {execution.reason}"
        )
    if not failed:
        context.add_output_metadata(metadata)
        return
    first = failed[0]
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    raise dg.Failure(
        description=(
            f"{len(failed)} execution(s) failed{more}: execution {first.execution_id} of "
            f"{first.workflow!r} on {first.entity}: {first.reason}"
        ),
        metadata={
            **metadata,
            "failed_executions": dg.MetadataValue.json(
                [
                    {
                        "execution": e.execution_id,
                        "workflow": e.workflow,
                        "entity": e.entity,
                        "tenant": e.tenant_id,
                        "reason": e.reason,
                    }
                    for e in failed
                ]
            ),
        },
        allow_retries=False,
    )
