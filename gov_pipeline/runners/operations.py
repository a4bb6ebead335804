"""What an operator does from the Dagster launchpad (the operator jobs): decide an approval
and continue its flow at once, retry failed executions, record a completed review. The same
services and checks as the CLI (`approvals approve|reject|request-changes`, `executions
retry`, `policies complete-review`), each in the tenant's own transactions."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.engine import scope_to_tenant
from gov_pipeline.domain.errors import TransientExecutionError
from gov_pipeline.domain.retry import RetryPolicy
from gov_pipeline.runners.batch import BatchReport, process_batch
from gov_pipeline.runners.deliveries import deliver_pending
from gov_pipeline.runners.retries import retry_now
from gov_pipeline.services import approvals, executions, reviews
from gov_pipeline.services.executions import get_execution, list_executions, retry_execution


@dataclass(frozen=True)
class DecisionOutcome:
    """The decision's change, and what processing it did (the flow's next steps)."""

    change_id: int
    approval_status: str
    report: BatchReport


def decide_and_continue(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    tenant_id: str,
    approval_id: int,
    user_id: str,
    decision: str,
    comment: str | None = None,
    signature: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> DecisionOutcome:
    """Record the decision (only a listed approver of the open step may), then process its
    change here, so the flow moves on in this run (the change sensor finds it done).

    Raises:
        PermissionDeniedError, ConflictError, NotFoundError, InvalidInputError: as
            `approvals.decide`; nothing is written.
    """
    with sessions.begin() as session:
        scope_to_tenant(session, tenant_id)
        change = approvals.decide(
            session, tenant_id=tenant_id, approval_id=approval_id, user_id=user_id,
            decision=decision, comment=comment, signature=signature,
        )  # fmt: skip
        change_id, status = change.id, str((change.new_values or {}).get("approval_status"))
    report = process_batch(
        sessions, [change_id], settings, RetryPolicy(), run_id=run_id,
        processed_by=f"dagster:{run_id}" if run_id else None,
    )  # fmt: skip
    deliver_pending(sessions, settings)
    return DecisionOutcome(change_id, status, report)


@dataclass(frozen=True)
class RetriedExecution:
    execution_id: int
    retried: str  # what was retried: deliveries, continuation or pending
    status: str  # where it stands now
    reason: str | None


def failed_execution_ids(
    sessions: sessionmaker[Session], tenant_id: str, workflow: str | None, limit: int
) -> list[int]:
    """The tenant's failed executions (of `workflow`, when given), newest first."""
    with sessions.begin() as session:
        scope_to_tenant(session, tenant_id)
        rows = list_executions(session, tenant_id, status="failed", workflow=workflow, limit=limit)
    return [int(r["id"]) for r in rows]


def retry_executions(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    tenant_id: str,
    execution_ids: list[int],
    run_id: str | None = None,
) -> list[RetriedExecution]:
    """Retry each failed execution from where it failed, as `executions retry` does.

    Raises:
        NotFoundError, ConflictError: an execution is unknown in the tenant or not failed
            (checked for every one before any is retried).
    """
    plans: list[tuple[int, str]] = []
    with sessions.begin() as session:
        scope_to_tenant(session, tenant_id)
        for execution_id in execution_ids:
            plans.append((execution_id, retry_execution(session, tenant_id, execution_id)))
    done = []
    for execution_id, what in plans:
        # Still pending after the retries (a transient failure): reported as it stands.
        with suppress(TransientExecutionError):
            retry_now(sessions, settings, execution_id, what, RetryPolicy(), run_id=run_id)
        with sessions.begin() as session:
            scope_to_tenant(session, tenant_id)
            execution = get_execution(session, tenant_id, execution_id)
            reason = execution.error or execution.status_reason
            done.append(RetriedExecution(execution_id, what, execution.status, reason))
    return done


def cancel_execution(
    sessions: sessionmaker[Session],
    *,
    tenant_id: str,
    execution_id: int,
    actor: str,
    reason: str | None = None,
) -> str:
    """End the execution `cancelled` (its open approval steps withdrawn, its queued webhooks
    not sent), in the tenant's transaction; returns its status.

    Raises:
        NotFoundError: no such execution in the tenant.
        ConflictError: it has ended already (completed, skipped or cancelled).
    """
    with sessions.begin() as session:
        scope_to_tenant(session, tenant_id)
        executions.cancel_execution(
            session, tenant_id=tenant_id, execution_id=execution_id, actor=actor, reason=reason
        )
        return str(get_execution(session, tenant_id, execution_id).status)


def complete_review(
    sessions: sessionmaker[Session],
    *,
    tenant_id: str,
    entity_type: str,
    entity_id: int,
    reviewed_by: str,
    notes: str | None = None,
) -> date | None:
    """Record a completed review in the tenant's transaction, as
    `gov-pipeline policies complete-review` does; returns the record's next review date
    (None: no next review is scheduled).

    Raises:
        InvalidInputError, NotFoundError, ConflictError: as `reviews.complete_review`;
            nothing is written.
    """
    with sessions.begin() as session:
        scope_to_tenant(session, tenant_id)
        return reviews.complete_review(
            session, tenant_id=tenant_id, entity_type=entity_type, entity_id=entity_id,
            reviewed_by=reviewed_by, notes=notes,
        )  # fmt: skip
