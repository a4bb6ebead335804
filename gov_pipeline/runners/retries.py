"""Processing one change: retries with backoff, failure records.

An attempt at one execution (or at the continuation of its approval flow) runs in a
transaction of its own; `record_failure` counts a failed attempt and fails the execution
for good when the error is permanent or the attempts are used up. Changes themselves are
processed in batches (`gov_pipeline.runners.batch`), which count their failures here too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.bulk import insert_ignore
from gov_pipeline.db.models import (
    ActionRun,
    EntityChange,
    WorkflowExecution,
)
from gov_pipeline.domain.errors import (
    ActionFailedError,
    NotFoundError,
    PermanentError,
    TransientExecutionError,
)
from gov_pipeline.domain.retry import RetryPolicy
from gov_pipeline.domain.statuses import (
    ActionRunStatus,
    ExecutionStatus,
)
from gov_pipeline.engine.continuation import DecisionRefused, continue_after_decision
from gov_pipeline.engine.execution import ExecutionReport, run_execution
from gov_pipeline.engine.failures import mark_failed
from gov_pipeline.runners.deliveries import deliver_pending
from gov_pipeline.services.executions import unhandled_decisions

log = logging.getLogger(__name__)


def record_failure(
    sessions: sessionmaker[Session],
    execution_id: int,
    error: BaseException,
    max_attempts: int,
    run_id: str | None = None,
) -> str:
    """After a failed attempt: count it, keep the error, and fail the execution when the
    error is permanent or attempts are used up (`run_id`: the Dagster run of the attempt,
    recorded on the execution). Returns the execution's status."""
    permanent = isinstance(error, PermanentError)
    with sessions.begin() as session:
        execution = session.get(WorkflowExecution, execution_id, with_for_update=True)
        if execution is None or execution.status not in (
            ExecutionStatus.PENDING,
            ExecutionStatus.AWAITING_APPROVAL,
        ):
            return execution.status if execution else "missing"
        execution.attempts += 1
        execution.error = str(error)[:4000]
        if run_id:
            execution.dagster_run_id = run_id
        if not permanent and execution.attempts < max_attempts:
            return execution.status
        if isinstance(error, ActionFailedError):
            # Only now: a retry would insert this step's own run under the same key.
            insert_ignore(
                session,
                ActionRun,
                {
                    "tenant_id": execution.tenant_id, "execution_id": execution.id,
                    "step_key": error.step_key, "action_type": error.action_type,
                    "status": ActionRunStatus.FAILED, "attempts": execution.attempts,
                    "error": str(error.cause)[:4000], "created_at": datetime.now(UTC),
                    "finished_at": datetime.now(UTC),
                },
            )  # fmt: skip
        why = "not retryable" if permanent else f"after {execution.attempts} attempts"
        mark_failed(session, execution, f"{error} ({why})")
        return execution.status


_TRANSIENT = (ActionFailedError, OperationalError, DBAPIError)


def attempt_execution(
    sessions: sessionmaker[Session],
    execution_id: int,
    settings: Settings,
    max_attempts: int,
    run_id: str | None = None,
) -> ExecutionReport | None:
    """One attempt at a pending execution.

    Raises:
        TransientExecutionError: it failed and may be retried (still pending).
    """
    try:
        with sessions.begin() as session:
            return run_execution(session, execution_id, settings, run_id)
    except _TRANSIENT as exc:
        status = record_failure(sessions, execution_id, exc, max_attempts, run_id)
        if status == ExecutionStatus.PENDING:
            raise TransientExecutionError(f"execution {execution_id}: {exc}") from exc
        return None


def with_retries(
    attempt: Callable[[], ExecutionReport | None],
    retry: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> ExecutionReport | None:
    """Call `attempt` until it stops raising TransientExecutionError, waiting between tries.

    Raises:
        TransientExecutionError: the last attempt failed too.
    """
    for number in range(1, retry.max_attempts + 1):
        try:
            return attempt()
        except TransientExecutionError:
            if number == retry.max_attempts:
                raise
            sleep(retry.delay(number))
    return None


def attempt_continuation(
    sessions: sessionmaker[Session],
    change_id: int,
    settings: Settings,
    max_attempts: int,
    run_id: str | None = None,
) -> ExecutionReport | None:
    """One attempt at continuing the approval flow a decision change belongs to."""
    with sessions.begin() as session:
        change = session.get(EntityChange, change_id)
        if change is None:
            raise NotFoundError("change", change_id)
        execution_id = (change.new_values or {}).get("execution_id")
    try:
        with sessions.begin() as session:
            change = session.get(EntityChange, change_id)
            assert change is not None
            done = continue_after_decision(session, change, settings, run_id)
            # A refused decision changes nothing (its change is marked refused when the
            # batch processes it).
            return None if isinstance(done, DecisionRefused) else done
    except _TRANSIENT as exc:
        if not isinstance(execution_id, int):
            raise
        status = record_failure(sessions, execution_id, exc, max_attempts, run_id)
        if status in (ExecutionStatus.PENDING, ExecutionStatus.AWAITING_APPROVAL):
            raise TransientExecutionError(f"change {change_id}: {exc}") from exc
        return None


def retry_now(
    sessions: sessionmaker[Session],
    settings: Settings,
    execution_id: int,
    what: str,
    retry: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    run_id: str | None = None,
) -> None:
    """Run what `executions.retry_execution` queued again, in this process (`run_id`: the
    Dagster run doing it, when one does)."""
    if what == "pending":
        with_retries(
            lambda: attempt_execution(sessions, execution_id, settings, retry.max_attempts, run_id),
            retry,
            sleep,
        )
    elif what == "continuation":
        with sessions.begin() as session:
            changes = unhandled_decisions(session, execution_id)
        for change_id in changes:
            with_retries(
                lambda cid=change_id: attempt_continuation(  # type: ignore[misc]
                    sessions, cid, settings, retry.max_attempts, run_id
                ),
                retry,
                sleep,
            )
    deliver_pending(sessions, settings, sleep=sleep)


def fail_pending_executions(
    sessions: sessionmaker[Session], change_ids: Sequence[int], reason: str
) -> list[int]:
    """Fail the still-pending executions of `change_ids` (and tell their owners): their run
    failed for good. Returns their ids."""
    if not change_ids:
        return []
    with sessions.begin() as session:
        executions = session.scalars(
            select(WorkflowExecution)
            .where(
                WorkflowExecution.change_id.in_(list(change_ids)),
                WorkflowExecution.status == ExecutionStatus.PENDING,
            )
            .with_for_update()
        ).all()
        for execution in executions:
            mark_failed(session, execution, reason)
        return [e.id for e in executions]
