"""Jobs an operator launches from the launchpad, with typed config: decide an approval,
retry failed executions, cancel an execution, record a completed review. They go through
the run coordinator like every run, and check what the CLI checks (only a listed approver
decides, and so on).

Dagster OSS has no user authentication: the deciding user is declared in the config (who
launched the run is not known). Put an authenticating proxy in front of the webserver and
give the launchpad only to those who may decide (docs/ui.md, "Who may decide")."""

# No "from __future__ import annotations": Dagster reads op and config annotations at runtime.

from enum import Enum

import dagster as dg
from pydantic import Field

from gov_pipeline.orchestration.common import LANE_TAG, lane_retries, permanent_errors
from gov_pipeline.orchestration.heartbeat import beating_in_process_executor
from gov_pipeline.orchestration.outcome import report_outcome
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners.operations import (
    cancel_execution,
    complete_review,
    decide_and_continue,
    failed_execution_ids,
    retry_executions,
)


class Decision(Enum):
    approve = "approve"
    reject = "reject"
    request_changes = "request_changes"


class DecideApprovalConfig(dg.Config):
    """An approver's decision on an open approval step."""

    tenant_id: str = Field(description="The tenant of the approval.")
    approval_id: int = Field(description="The approval step (gov-pipeline approvals list).")
    decision: Decision = Field(description="approve, reject or request_changes.")
    user_id: str = Field(
        description="Who decides: must be an approver of the step. Declared, not "
        "authenticated (Dagster OSS has no users): see docs/ui.md."
    )
    comment: str | None = Field(default=None, description="Kept with the decision.")
    typed_signature: str | None = Field(
        default=None, description="A typed signature (the decider's name), if one is wanted."
    )


@dg.op
@lane_retries
def decide(
    context: dg.OpExecutionContext, config: DecideApprovalConfig, database: DatabaseResource
) -> None:
    """Record the decision and move the flow on (its next steps run in this run)."""
    signature = (
        {"type": "typed", "data": config.typed_signature} if config.typed_signature else None
    )
    with permanent_errors():
        outcome = decide_and_continue(
            database.sessions(), database.settings(), tenant_id=config.tenant_id,
            approval_id=config.approval_id, user_id=config.user_id,
            decision=config.decision.value, comment=config.comment, signature=signature,
            run_id=context.run_id,
        )  # fmt: skip
    context.log.info(
        f"approval {config.approval_id} {outcome.approval_status} by {config.user_id} "
        f"(change {outcome.change_id})"
    )
    ran = {str(r.execution_id): f"{r.workflow}: {r.status}" for r in outcome.report.ran}
    report_outcome(
        context, database,
        {"approval": config.approval_id, "decision": outcome.approval_status,
         "decided_by": config.user_id, "change_id": outcome.change_id,
         "executions": dg.MetadataValue.json(ran)},
    )  # fmt: skip


@dg.job(
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "policy"},
    description="Decide an approval step (approve, reject, request changes) as a listed "
    "approver; the flow continues in the same run.",
)
def decide_approval() -> None:
    decide()


class RetryExecutionsConfig(dg.Config):
    """Which failed executions to retry: one, or all matching a filter."""

    tenant_id: str = Field(description="The tenant of the executions.")
    execution_id: int | None = Field(default=None, description="One execution; or leave empty")
    workflow: str | None = Field(
        default=None, description="With no execution_id: only the failed ones of this workflow."
    )
    limit: int = Field(default=50, ge=1, le=1000, description="At most this many (newest).")


@dg.op
@lane_retries
def retry(
    context: dg.OpExecutionContext, config: RetryExecutionsConfig, database: DatabaseResource
) -> None:
    """Retry each from where it failed; the run fails if one fails again."""
    sessions = database.sessions()
    with permanent_errors():
        ids = (
            [config.execution_id]
            if config.execution_id is not None
            else failed_execution_ids(sessions, config.tenant_id, config.workflow, config.limit)
        )
        retried = retry_executions(
            sessions, database.settings(), tenant_id=config.tenant_id, execution_ids=ids,
            run_id=context.run_id,
        )  # fmt: skip
    for r in retried:
        context.log.info(f"execution {r.execution_id}: retried {r.retried}, now {r.status}")
    report_outcome(
        context, database,
        {"retried": dg.MetadataValue.json(
            {str(r.execution_id): {"retried": r.retried, "status": r.status} for r in retried}
        )},
    )  # fmt: skip


@dg.job(
    name="retry_executions",
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "policy"},
    description="Retry failed executions from where they failed: one, or all of a tenant "
    "(optionally of one workflow).",
)
def retry_executions_job() -> None:
    retry()


class CancelExecutionConfig(dg.Config):
    """An execution to end, and who ends it and why."""

    tenant_id: str = Field(description="The tenant of the execution.")
    execution_id: int = Field(description="The execution to cancel.")
    user_id: str = Field(description="Who cancels it (declared, not authenticated).")
    reason: str | None = Field(default=None, description="Why, kept on the execution.")


@dg.op
@lane_retries
def cancel(
    context: dg.OpExecutionContext, config: CancelExecutionConfig, database: DatabaseResource
) -> None:
    """End the execution `cancelled`; its waiting approval steps are withdrawn."""
    with permanent_errors():
        status = cancel_execution(
            database.sessions(), tenant_id=config.tenant_id, execution_id=config.execution_id,
            actor=config.user_id, reason=config.reason,
        )  # fmt: skip
    context.add_output_metadata({"execution_id": config.execution_id, "status": status})


@dg.job(
    name="cancel_execution",
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "policy"},
    description="Cancel an execution: it ends cancelled, its waiting approval steps are "
    "withdrawn, nothing more runs for it.",
)
def cancel_execution_job() -> None:
    cancel()


class CompleteReviewConfig(dg.Config):
    """A review of a policy, SOP or risk, completed by a user."""

    tenant_id: str = Field(description="The tenant of the record.")
    entity_type: str = Field(description="policy, sop or risk.")
    entity_id: int = Field(description="The record's id.")
    reviewed_by: str = Field(description="Who reviewed it (declared, not authenticated).")
    notes: str | None = Field(default=None, description="What the review found; kept with it.")


@dg.op
@lane_retries
def record_review(
    context: dg.OpExecutionContext, config: CompleteReviewConfig, database: DatabaseResource
) -> None:
    """Record the review; the database schedules the record's next one."""
    with permanent_errors():
        next_review = complete_review(
            database.sessions(), tenant_id=config.tenant_id, entity_type=config.entity_type,
            entity_id=config.entity_id, reviewed_by=config.reviewed_by, notes=config.notes,
        )  # fmt: skip
    scheduled = next_review.isoformat() if next_review else "none"
    context.log.info(
        f"{config.entity_type} {config.entity_id} reviewed by {config.reviewed_by}; "
        f"next review {scheduled}"
    )
    context.add_output_metadata(
        {"entity": f"{config.entity_type} {config.entity_id}",
         "reviewed_by": config.reviewed_by, "next_review_date": scheduled}
    )  # fmt: skip


@dg.job(
    name="complete_review",
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "policy"},
    description="Record a completed review of a policy, SOP or risk: its next review date "
    "moves on by its review frequency.",
)
def complete_review_job() -> None:
    record_review()
