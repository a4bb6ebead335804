"""Processing changes: retries with backoff, failure records, the synchronous path.

`process_pending` is `gov-pipeline process --sync`: it reads changes after its stored
cursor with the commit-safe reader and processes them in this process, in commit order.
It is safe beside the Dagster path: both meet at the engine's unique keys and claims.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.models import (
    ActionRun,
    ConsumerCursor,
    EntityChange,
    ProcessedChange,
    Workflow,
    WorkflowExecution,
)
from gov_pipeline.domain.errors import GovPipelineError, NotFoundError
from gov_pipeline.domain.statuses import (
    ActionRunStatus,
    ChangeKind,
    ExecutionStatus,
    NotificationType,
)
from gov_pipeline.services import notifications
from gov_pipeline.services.changes import ChangeCursor, read_changes
from gov_pipeline.services.continuation import continue_after_decision
from gov_pipeline.services.engine import (
    ActionFailedError,
    ExecutionReport,
    MatchReport,
    insert_ignore,
    insert_marker,
    match_change,
    pending_executions,
    run_execution,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts include the first try; the wait doubles from `delay_s` (the policy queue's
    5 attempts with exponential 2 s backoff)."""

    max_attempts: int = 5
    delay_s: float = 2.0

    def delay(self, attempt: int) -> float:
        return float(self.delay_s * 2 ** (attempt - 1))


class TransientExecutionError(GovPipelineError):
    """An attempt failed in a way a retry may fix; the execution is still pending."""


def _notify_owner_of_failure(session: Session, execution: WorkflowExecution, error: str) -> None:
    workflow = session.get(Workflow, execution.workflow_id)
    if workflow is None or not workflow.owner_id:
        return
    # One notice per failed execution, even if failure is recorded twice.
    run_id = insert_marker(session, execution, "failure-notice", "notify")
    if run_id is None:
        return
    notifications.send(
        session,
        tenant_id=execution.tenant_id,
        recipients=[workflow.owner_id],
        type=NotificationType.GENERAL.value,
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
    execution.status = ExecutionStatus.FAILED.value
    execution.error = error[:4000]
    execution.status_reason = execution.error
    execution.finished_at = datetime.now(UTC)
    _notify_owner_of_failure(session, execution, error)
    log.warning("execution %s failed: %s", execution.id, error)


def record_failure(
    sessions: sessionmaker[Session], execution_id: int, error: BaseException, max_attempts: int
) -> str:
    """After a failed attempt: count it, keep the error, and fail the execution when the
    error is permanent or attempts are used up. Returns the execution's status."""
    permanent = isinstance(error, ActionFailedError) and error.permanent
    with sessions.begin() as session:
        execution = session.get(WorkflowExecution, execution_id, with_for_update=True)
        if execution is None or execution.status not in (
            ExecutionStatus.PENDING.value,
            ExecutionStatus.AWAITING_APPROVAL.value,
        ):
            return execution.status if execution else "missing"
        execution.attempts += 1
        execution.error = str(error)[:4000]
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
                    "status": ActionRunStatus.FAILED.value, "attempts": execution.attempts,
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
        status = record_failure(sessions, execution_id, exc, max_attempts)
        if status == ExecutionStatus.PENDING.value:
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
    sessions: sessionmaker[Session], change_id: int, settings: Settings, max_attempts: int
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
            return continue_after_decision(session, change, settings)
    except _TRANSIENT as exc:
        if not isinstance(execution_id, int):
            raise
        status = record_failure(sessions, execution_id, exc, max_attempts)
        if status in (ExecutionStatus.PENDING.value, ExecutionStatus.AWAITING_APPROVAL.value):
            raise TransientExecutionError(f"change {change_id}: {exc}") from exc
        return None


@dataclass
class ChangeReport:
    change_id: int
    match: MatchReport
    ran: list[ExecutionReport] = field(default_factory=list)


def process_change(
    sessions: sessionmaker[Session],
    change_id: int,
    settings: Settings,
    retry: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
) -> ChangeReport:
    """Process one change: continuation of its approval flow, then the workflows it matches."""
    with sessions.begin() as session:
        change = session.get(EntityChange, change_id)
        if change is None:
            raise NotFoundError("change", change_id)
        kind = change.kind
        report = ChangeReport(change_id, match_change(session, change, settings))
    if kind == ChangeKind.APPROVAL_DECIDED.value:
        done = with_retries(
            lambda: attempt_continuation(sessions, change_id, settings, retry.max_attempts),
            retry,
            sleep,
        )
        if done is not None:
            report.ran.append(done)
    for execution_id in report.match.executions:
        try:
            ran = with_retries(
                lambda eid=execution_id: attempt_execution(  # type: ignore[misc]
                    sessions, eid, settings, retry.max_attempts
                ),
                retry,
                sleep,
            )
        except TransientExecutionError:
            ran = None  # attempts used up: record_failure has failed it
        if ran is not None:
            report.ran.append(ran)
    return report


def unprocessed_before(session: Session, change: EntityChange) -> list[int]:
    """The entity's earlier changes not yet marked processed, oldest first.

    They are all committed: an entity's changes commit in id order (its row is locked).
    """
    query = (
        select(EntityChange.id)
        .where(
            EntityChange.tenant_id == change.tenant_id,
            EntityChange.entity_type == change.entity_type,
            EntityChange.entity_id == change.entity_id,
            EntityChange.id < change.id,
            ~select(ProcessedChange.change_id)
            .where(ProcessedChange.change_id == EntityChange.id)
            .exists(),
        )
        .order_by(EntityChange.id)
    )
    return list(session.scalars(query))


def process_in_order(
    sessions: sessionmaker[Session],
    change_id: int,
    settings: Settings,
    retry: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    processed_by: str | None = None,
) -> list[ChangeReport]:
    """Process `change_id`, after any earlier unprocessed change of the same entity.

    Two runs holding changes of one policy may start in either order; whichever gets there
    processes the policy's changes oldest first, and the engine's claims make the other
    find nothing left to do. Each change is then marked processed.
    """
    with sessions.begin() as session:
        change = session.get(EntityChange, change_id)
        if change is None:
            raise NotFoundError("change", change_id)
        todo = [*unprocessed_before(session, change), change_id]
        done = set(
            session.scalars(
                select(ProcessedChange.change_id).where(ProcessedChange.change_id.in_(todo))
            )
        )
    reports = []
    for cid in todo:
        if cid in done:
            continue
        reports.append(process_change(sessions, cid, settings, retry, sleep))
        mark_processed(sessions, [cid], processed_by)
    return reports


@dataclass
class ProcessStats:
    changes: int = 0
    executions: int = 0
    batches: int = 0
    seconds: float = 0.0


def load_cursor(sessions: sessionmaker[Session], consumer: str) -> ChangeCursor:
    with sessions.begin() as session:
        row = session.get(ConsumerCursor, consumer)
        return ChangeCursor.decode(row.cursor if row else None)


def save_cursor(sessions: sessionmaker[Session], consumer: str, cursor: ChangeCursor) -> None:
    with sessions.begin() as session:
        row = session.get(ConsumerCursor, consumer)
        if row is None:
            session.add(ConsumerCursor(name=consumer, cursor=cursor.encode()))
        else:
            row.cursor = cursor.encode()


def process_pending(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    consumer: str = "sync",
    batch_size: int = 200,
    max_changes: int | None = None,
    retry: RetryPolicy = RetryPolicy(),
    on_progress: Callable[[ProcessStats], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ProcessStats:
    """Process every committed change after `consumer`'s cursor, in commit order.

    The cursor is saved after each batch; a crash in between means the batch is read
    again, which the engine's unique keys make harmless.
    """
    from gov_pipeline.services.deliveries import deliver_pending

    stats = ProcessStats()
    started = time.perf_counter()
    cursor = load_cursor(sessions, consumer)
    while max_changes is None or stats.changes < max_changes:
        limit = batch_size if max_changes is None else min(batch_size, max_changes - stats.changes)
        with sessions.begin() as session:
            batch = read_changes(session, cursor, limit)
            ids = [c.id for c in batch.changes]
        for change_id in ids:
            for report in process_in_order(
                sessions, change_id, settings, retry, sleep, processed_by=consumer
            ):
                stats.executions += len(report.ran)
            stats.changes += 1
        cursor = batch.cursor
        save_cursor(sessions, consumer, cursor)
        stats.batches += 1
        stats.seconds = time.perf_counter() - started
        if on_progress is not None:
            on_progress(stats)
        if not ids:
            break  # (a short batch is not the end: processing may have made new changes)
    deliver_pending(sessions, settings, sleep=sleep)
    stats.seconds = time.perf_counter() - started
    return stats


def retry_now(
    sessions: sessionmaker[Session],
    settings: Settings,
    execution_id: int,
    what: str,
    retry: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Run what `executions.retry_execution` queued again, in this process."""
    from gov_pipeline.services.deliveries import deliver_pending
    from gov_pipeline.services.executions import unhandled_decisions

    if what == "pending":
        with_retries(
            lambda: attempt_execution(sessions, execution_id, settings, retry.max_attempts),
            retry,
            sleep,
        )
    elif what == "continuation":
        with sessions.begin() as session:
            changes = unhandled_decisions(session, execution_id)
        for change_id in changes:
            with_retries(
                lambda cid=change_id: attempt_continuation(  # type: ignore[misc]
                    sessions, cid, settings, retry.max_attempts
                ),
                retry,
                sleep,
            )
    deliver_pending(sessions, settings, sleep=sleep)


def attempt_change(
    sessions: sessionmaker[Session],
    change_id: int,
    settings: Settings,
    max_attempts: int,
    run_id: str | None = None,
) -> list[ExecutionReport]:
    """One attempt at everything a matched change still needs: the continuation of its
    approval flow (for a decision), then its pending executions, in order.

    Raises:
        TransientExecutionError: something failed and may be retried; what succeeded stays
            done (the next attempt skips it).
    """
    with sessions.begin() as session:
        change = session.get(EntityChange, change_id)
        if change is None:
            raise NotFoundError("change", change_id)
        kind = change.kind
        pending = pending_executions(session, change_id)
    reports: list[ExecutionReport] = []
    if kind == ChangeKind.APPROVAL_DECIDED.value:
        done = attempt_continuation(sessions, change_id, settings, max_attempts)
        if done is not None:
            reports.append(done)
    for execution_id in pending:
        ran = attempt_execution(sessions, execution_id, settings, max_attempts, run_id)
        if ran is not None:
            reports.append(ran)
    return reports


def mark_processed(
    sessions: sessionmaker[Session], change_ids: list[int], processed_by: str | None
) -> int:
    """Mark changes processed (idempotent); returns how many were new."""
    if not change_ids:
        return 0
    with sessions.begin() as session:
        tenants = dict(
            session.execute(
                select(EntityChange.id, EntityChange.tenant_id).where(
                    EntityChange.id.in_(change_ids)
                )
            ).all()
        )
        now = datetime.now(UTC)
        return insert_ignore(
            session,
            ProcessedChange,
            [
                {"change_id": cid, "tenant_id": tenants[cid], "processed_by": processed_by,
                 "processed_at": now}
                for cid in change_ids
                if cid in tenants
            ],
        )  # fmt: skip
