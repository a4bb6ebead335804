"""One workflow for one entity, by hand (the `execute_workflow` job and the launchpad):
create the manual execution once per request and run it with the lane's retries."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.models import WorkflowExecution
from gov_pipeline.domain.statuses import ExecutionStatus
from gov_pipeline.engine.manual import start_manual_execution
from gov_pipeline.runners.retries import attempt_execution


@dataclass(frozen=True)
class ManualOutcome:
    """How the manual execution ended (or stands), and the actions it ran."""

    execution_id: int
    status: str
    reason: str | None
    actions: list[str] = field(default_factory=list)


def run_manual_workflow(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    tenant_id: str,
    workflow: str,
    entity_id: int,
    request_key: str,
    actor: str,
    max_attempts: int,
    run_id: str | None = None,
) -> ManualOutcome:
    """Run `workflow` for the record `entity_id` of its entity type, once per `request_key`
    (a replay finds it done; `run_id`: the Dagster run making this attempt, recorded on the
    execution, default `request_key`).

    Raises:
        NotFoundError: no such tenant, workflow or record.
        TransientExecutionError: the attempt failed and may be retried (still pending).
    """
    with sessions.begin() as session:
        execution = start_manual_execution(
            session, tenant_id=tenant_id, workflow=workflow, entity_id=entity_id,
            request_key=request_key, actor=actor,
        )  # fmt: skip
        execution_id, status = execution.id, execution.status
    report = None
    if status == ExecutionStatus.PENDING:
        report = attempt_execution(
            sessions, execution_id, settings, max_attempts, run_id or request_key
        )
    with sessions.begin() as session:
        final = session.get(WorkflowExecution, execution_id)
        assert final is not None  # it was just created or found
        reason = final.status_reason or final.error
        return ManualOutcome(execution_id, final.status, reason, report.actions if report else [])
