"""Ending an execution as failed, in the caller's transaction, and telling its owner."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from gov_pipeline.db.models import Workflow, WorkflowExecution
from gov_pipeline.domain.statuses import FAILURE_NOTICE, ExecutionStatus, NotificationType
from gov_pipeline.engine.execution import insert_marker
from gov_pipeline.services import notifications

log = logging.getLogger(__name__)


def _notify_owner_of_failure(session: Session, execution: WorkflowExecution, error: str) -> None:
    workflow = session.get(Workflow, execution.workflow_id)
    if workflow is None or not workflow.owner_id:
        return
    # One notice per failed execution, even if failure is recorded twice.
    run_id = insert_marker(session, execution, FAILURE_NOTICE, "notify")
    if run_id is None:
        return
    notifications.send(
        session,
        tenant_id=execution.tenant_id,
        recipients=[workflow.owner_id],
        type=NotificationType.GENERAL,
        priority="high",
        title=f"Workflow {workflow.name} failed on {execution.entity_type} {execution.entity_id}",
        message=error[:2000],
        entity_type=execution.entity_type,
        entity_id=execution.entity_id,
        execution_id=execution.id,
        action_run_id=run_id,
    )


def mark_failed(session: Session, execution: WorkflowExecution, error: str) -> None:
    """End an execution as failed with `error` and tell the workflow owner."""
    execution.status = ExecutionStatus.FAILED
    execution.error = error[:4000]
    execution.status_reason = execution.error
    execution.finished_at = datetime.now(UTC)
    _notify_owner_of_failure(session, execution, error)
    # Recorded on the execution and reported by the caller (an ERROR event of its run, the
    # CLI's error line): the log only traces it.
    log.info("execution %s failed: %s", execution.id, error)
