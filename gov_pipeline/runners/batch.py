"""Processing many changes at once: the path of every run and of `process --sync`.

A batch's changes, with the earlier unprocessed changes of their records (catch-up), are
matched in bulk and then executed in chunks. One transaction per chunk claims the chunk's
pending executions (one statement), runs each change's approval continuation and
executions, and marks the chunk's changes processed, so a change's effects commit with its
processed marker and a chunk costs one commit instead of several per change.

The guarantees are those of one change at a time: claims and unique keys make a replay do
nothing twice. The first change whose work fails ends its chunk: the transaction rolls back,
the changes before it run again and commit (one more transaction, no savepoints on the way
of success), the failed attempt is counted on its execution (`record_failure`: failed for good
when the error is permanent or the attempts are used up), and the next chunk starts at that
change again, after the caller's wait (or the caller raises to retry later). So a record's
changes still complete in commit order, and a change that cannot succeed fails alone
without blocking the ones behind it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select, tuple_
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.bulk import insert_ignore, start_buffering, write_buffered
from gov_pipeline.db.engine import scope_to_tenant
from gov_pipeline.db.models import EntityChange, ProcessedChange, Workflow, WorkflowExecution
from gov_pipeline.domain.batching import compact_ids
from gov_pipeline.domain.errors import ActionFailedError, ChangeAttemptFailed, InvalidInputError
from gov_pipeline.domain.retry import RetryPolicy
from gov_pipeline.domain.statuses import ChangeKind, ChangeOutcome, ExecutionStatus
from gov_pipeline.engine.continuation import DecisionRefused, continue_after_decision
from gov_pipeline.engine.execution import (
    ExecutionReport,
    claim_pending_of,
    run_claimed,
)
from gov_pipeline.engine.matching import match_changes
from gov_pipeline.runners.deliveries import deliver_pending
from gov_pipeline.runners.retries import record_failure
from gov_pipeline.services.changes import unprocessed
from gov_pipeline.services.entities import load_entities
from gov_pipeline.services.run_fences import refuse_if_fenced
from gov_pipeline.services.skips import skipped_total, with_skips
from gov_pipeline.services.tenants import ROLE_CACHE

log = logging.getLogger(__name__)

CHUNK_CHANGES = 50  # changes per transaction: fewer commits, without holding locks for long
_KEYS_PER_QUERY = 500
_LOADED = "gov_pipeline.batch_rows"


@dataclass
class BatchReport:
    """What processing a batch did."""

    changes: list[int] = field(default_factory=list)  # processed, in order
    catch_up: list[int] = field(default_factory=list)  # earlier changes taken in
    already: list[int] = field(default_factory=list)  # found processed before
    ran: list[ExecutionReport] = field(default_factory=list)
    failures: int = 0  # failed attempts (counted on their executions)
    refused: dict[int, str] = field(default_factory=dict)  # change id -> why it was refused
    commits: int = 0
    retry: RetryLater | None = None  # the attempt that stopped the batch, to be retried


@dataclass(frozen=True)
class RetryLater:
    """An attempt at `change_id`'s work failed with `error`, and its execution may be tried
    again: the caller waits (the sync path) or has its op retried (a run)."""

    change_id: int
    error: BaseException


_ENTITY = (EntityChange.tenant_id, EntityChange.entity_type, EntityChange.entity_id)


def plan_batch(
    session: Session, change_ids: Sequence[int]
) -> tuple[list[int], list[int], list[int]]:
    """What a batch must process, in order: its changes and the earlier unprocessed changes
    of the same entities, less those already processed.

    An entity's changes commit in id order (the capture locks its row), so every change
    before one that is visible is committed too.

    Returns:
        (to process in id order, catch-up ids among them, ids already processed)
    """
    rows = session.execute(
        select(EntityChange.id, *_ENTITY).where(EntityChange.id.in_(list(change_ids)))
    ).all()
    latest: dict[tuple[str, str, str], int] = {}
    for cid, *key in rows:
        entity = (str(key[0]), str(key[1]), str(key[2]))
        latest[entity] = max(latest.get(entity, 0), int(cid))
    given = {int(r[0]) for r in rows}
    earlier: set[int] = set()
    keys = list(latest)
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        part = keys[start : start + _KEYS_PER_QUERY]
        found = session.execute(
            select(EntityChange.id, *_ENTITY).where(
                tuple_(*_ENTITY).in_(part),
                EntityChange.id < max(latest[k] for k in part),
                unprocessed(),
            )
        )
        for cid, *key in found:
            if int(cid) < latest[(str(key[0]), str(key[1]), str(key[2]))]:
                earlier.add(int(cid))
    candidates = sorted(given | earlier)
    already = processed_among(session, candidates)
    todo = [c for c in candidates if c not in already]
    return todo, sorted(earlier - given - already), sorted(already & given)


def processed_among(session: Session, change_ids: Sequence[int]) -> set[int]:
    found: set[int] = set()
    for start in range(0, len(change_ids), 1000):
        part = list(change_ids[start : start + 1000])
        found.update(
            session.scalars(
                select(ProcessedChange.change_id).where(ProcessedChange.change_id.in_(part))
            )
        )
    return found


def mark_changes_processed(
    session: Session,
    change_ids: Sequence[int],
    processed_by: str | None,
    refused: Mapping[int, str] | None = None,
) -> int:
    """Mark changes processed in the caller's transaction (idempotent); how many were new.

    Args:
        refused: changes refused instead of processed, with the reason (kept as the note).
    """
    refused = refused or {}
    if not change_ids:
        return 0
    now = datetime.now(UTC)
    written = 0
    for start in range(0, len(change_ids), 1000):
        part = list(change_ids[start : start + 1000])
        tenants = session.execute(
            select(EntityChange.id, EntityChange.tenant_id).where(EntityChange.id.in_(part))
        ).all()
        written += insert_ignore(
            session,
            ProcessedChange,
            [
                {"change_id": cid, "tenant_id": tenant, "processed_by": processed_by,
                 "processed_at": now,
                 "outcome": ChangeOutcome.REFUSED if cid in refused else ChangeOutcome.PROCESSED,
                 "note": refused.get(cid)}
                for cid, tenant in tenants
            ],
        )  # fmt: skip
    return written


def _run_change(
    session: Session, change: EntityChange, executions: Sequence[WorkflowExecution],
    settings: Settings, run_id: str | None,
) -> tuple[list[ExecutionReport], str | None]:  # fmt: skip
    """A change's continuation (for a decision), then its claimed executions, in order.

    Returns:
        What ran, and the reason the change was refused (a decision naming what does not
        belong together), if it was.

    Raises:
        ChangeAttemptFailed: one of them failed (the caller rolls its transaction back).
    """
    ran: list[ExecutionReport] = []
    if change.kind == ChangeKind.APPROVAL_DECIDED:
        write_buffered(session)  # the continuation reads what the chunk did before it
        try:
            done = continue_after_decision(session, change, settings, run_id)
        except _RETRYABLE as exc:
            # The decision was checked: it names an execution of its own tenant.
            decided = int((change.new_values or {})["execution_id"])
            raise ChangeAttemptFailed(change.id, decided, exc) from exc
        if isinstance(done, DecisionRefused):
            _skip_executions(session, executions, f"the decision was refused: {done.reason}")
            return ran, done.reason
        if done is not None:
            ran.append(done)
    for execution in executions:
        execution_id = execution.id
        try:
            ran.append(run_claimed(session, execution, settings, run_id))
            session.flush()  # a write that fails is this execution's failure
        except _RETRYABLE as exc:
            raise ChangeAttemptFailed(change.id, execution_id, exc) from exc
    return ran, None


_RETRYABLE = (ActionFailedError, SQLAlchemyError)


def _skip_executions(
    session: Session, executions: Sequence[WorkflowExecution], reason: str
) -> None:
    """The workflows listening to a refused decision do not run on it."""
    now = datetime.now(UTC)
    for execution in executions:
        if execution.status == ExecutionStatus.IN_PROGRESS:  # claimed by this chunk
            execution.status = ExecutionStatus.SKIPPED
            execution.status_reason = reason
            execution.finished_at = now


class _ChunkFailed(Exception):
    """A change of the chunk failed: its transaction rolls back (raised inside it)."""

    def __init__(self, index: int, failure: ChangeAttemptFailed) -> None:
        super().__init__(str(failure))
        self.index = index
        self.failure = failure


def _run_chunk(
    sessions: sessionmaker[Session],
    tenant: str,
    chunk: Sequence[int],
    settings: Settings,
    run_id: str | None,
    processed_by: str | None,
    report: BatchReport,
) -> tuple[int, ChangeAttemptFailed | None]:
    """Run the chunk's changes in one transaction, stopping at the first that fails.

    No savepoint per change: when a change fails, the whole transaction rolls back and the
    changes before it run again as one transaction (a failure costs its chunk's prefix
    once; success costs no statement for it).

    Returns:
        How many changes of the chunk committed, and the failure that stopped it (if any).
    """
    try:
        _attempt_chunk(sessions, tenant, chunk, settings, run_id, processed_by, report)
    except _ChunkFailed as failed:
        if failed.index == 0:
            return 0, failed.failure
        committed, again = _run_chunk(
            sessions, tenant, chunk[: failed.index], settings, run_id, processed_by, report
        )
        return committed, again or failed.failure
    return len(chunk), None


def _attempt_chunk(
    sessions: sessionmaker[Session],
    tenant: str,
    chunk: Sequence[int],
    settings: Settings,
    run_id: str | None,
    processed_by: str | None,
    report: BatchReport,
) -> None:
    """Run every change of the chunk and commit; `_ChunkFailed` (nothing committed) if one
    fails."""
    ran: list[ExecutionReport] = []
    refused: dict[int, str] = {}
    with sessions.begin() as session:
        scope_to_tenant(session, tenant)  # row-level security: this tenant's rows only
        session.info[ROLE_CACHE] = {}  # role holders, read once per chunk
        changes = {
            c.id: c for c in session.scalars(select(EntityChange).where(EntityChange.id.in_(chunk)))
        }
        # One read each, then executions find them loaded (held here: a session's identity
        # map keeps rows only while something references them).
        tenants = {c.tenant_id for c in changes.values()}
        session.info[_LOADED] = (
            load_entities(session, list(changes.values())),
            session.scalars(select(Workflow).where(Workflow.tenant_id.in_(tenants))).all(),
        )
        pending = claim_pending_of(session, list(chunk))
        start_buffering(session)  # action runs and notifications: written at the end
        for index, change_id in enumerate(chunk):
            try:
                did, refusal = _run_change(
                    session, changes[change_id], pending.get(change_id, []), settings, run_id
                )
            except ChangeAttemptFailed as failure:
                raise _ChunkFailed(index, failure) from failure
            ran.extend(did)
            if refusal is not None:
                refused[change_id] = refusal
        write_buffered(session)
        if run_id is not None:  # a run another worker ended commits nothing more
            refuse_if_fenced(session, run_id)
        mark_changes_processed(session, chunk, processed_by, refused)
    report.refused.update(refused)
    report.commits += 1
    report.changes.extend(chunk)
    report.ran.extend(ran)


@dataclass(frozen=True)
class BatchPlan:
    """What a batch processes: its changes with the earlier unprocessed changes of their
    entities (catch-up), in commit order, less what was processed before."""

    todo: list[int]
    catch_up: list[int]
    already: list[int]
    entities: list[str]  # tenant/type:id of the given changes, for the run's metadata


def plan_run(sessions: sessionmaker[Session], change_ids: Sequence[int]) -> BatchPlan:
    """Plan the processing of `change_ids`.

    Raises:
        InvalidInputError: no change given, or a change id that does not exist.
    """
    if not change_ids:
        raise InvalidInputError("change_ids", "a run needs at least one change")
    with sessions.begin() as session:
        rows = session.execute(
            select(*_ENTITY)
            .add_columns(EntityChange.id)
            .where(EntityChange.id.in_(list(change_ids)))
        ).all()
        missing = sorted(set(change_ids) - {r[3] for r in rows})
        if missing:
            raise InvalidInputError("change_ids", f"unknown change(s): {compact_ids(missing)}")
        todo, catch_up, already = plan_batch(session, change_ids)
    entities = sorted({f"{tenant}/{kind}:{entity}" for tenant, kind, entity, _ in rows})
    return BatchPlan(todo, catch_up, already, entities)


MATCH_CHUNK = 500  # changes matched per transaction


@dataclass
class MatchSummary:
    """What matching a batch did: workflows matched, conditions that failed (the first
    reasons per workflow), workflows refused (chain depth), executions created."""

    matched: Counter[str] = field(default_factory=Counter)
    conditions_failed: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    executions: int = 0
    commits: int = 0


def match_planned(
    sessions: sessionmaker[Session], change_ids: Sequence[int], settings: Settings
) -> MatchSummary:
    """Create the executions the planned changes call for (once), a tenant at a time and
    `MATCH_CHUNK` changes per transaction."""
    summary = MatchSummary()
    with sessions.begin() as session:
        groups = tenant_groups(session, change_ids)
    for tenant, ids in groups:
        for start in range(0, len(ids), MATCH_CHUNK):
            with sessions.begin() as session:
                scope_to_tenant(session, tenant)
                changes = session.scalars(
                    select(EntityChange)
                    .where(EntityChange.id.in_(ids[start : start + MATCH_CHUNK]))
                    .order_by(EntityChange.id)
                ).all()
                reports = match_changes(session, changes, settings)
            summary.commits += 1
            for report in reports:
                summary.matched.update(report.matched)
                for name, reasons in report.skipped.items():
                    summary.conditions_failed.setdefault(name, reasons[:3])
                summary.refused.update(report.refused)
                summary.executions += len(report.executions)
    return summary


def execute_planned(
    sessions: sessionmaker[Session],
    change_ids: Sequence[int],
    settings: Settings,
    *,
    max_attempts: int,
    run_id: str | None = None,
    processed_by: str | None = None,
    chunk_changes: int = CHUNK_CHANGES,
    report: BatchReport | None = None,
) -> BatchReport:
    """Run the planned and matched changes' work in order and mark each processed with it.

    Stops at the first failed attempt whose execution may be tried again (`report.retry`
    says which); a later call goes on from there (what was processed is skipped). An
    execution gets `max_attempts` attempts. A database error outside a change's work (a
    lost connection, a deadlock on commit) propagates: nothing of its chunk committed.
    """
    report = report if report is not None else BatchReport()
    report.retry = None
    with sessions.begin() as session:
        done = processed_among(session, change_ids)
        groups = tenant_groups(session, [c for c in change_ids if c not in done])
    for tenant, ids in groups:
        position = 0
        while position < len(ids):
            committed, failed = _run_chunk(
                sessions, tenant, ids[position : position + chunk_changes], settings, run_id,
                processed_by, report,
            )  # fmt: skip
            position += committed
            if failed is None:
                continue
            # Count the attempt; what ended for good is no longer pending, so the next chunk
            # starts at this change again and its other executions go on.
            status = record_failure(
                sessions, failed.execution_id, failed.cause, max_attempts, run_id
            )
            report.failures += 1
            if status in (ExecutionStatus.PENDING, ExecutionStatus.AWAITING_APPROVAL):
                report.retry = RetryLater(failed.change_id, failed.cause)
                return report
    return report


def process_batch(
    sessions: sessionmaker[Session],
    change_ids: Sequence[int],
    settings: Settings,
    retry: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    run_id: str | None = None,
    processed_by: str | None = None,
    chunk_changes: int = CHUNK_CHANGES,
) -> BatchReport:
    """Plan, match and execute `change_ids` here, the path of `process --sync`: a failed
    attempt that may be retried is waited for in this process (the policy's backoff)."""
    plan = plan_run(sessions, change_ids)
    report = BatchReport(catch_up=plan.catch_up, already=plan.already)
    report.commits += match_planned(sessions, plan.todo, settings).commits
    failures: dict[int, int] = {}
    while True:
        execute_planned(
            sessions, plan.todo, settings, max_attempts=retry.max_attempts, run_id=run_id,
            processed_by=processed_by, chunk_changes=chunk_changes, report=report,
        )  # fmt: skip
        if report.retry is None:
            return report
        change_id, error = report.retry.change_id, report.retry.error
        failures[change_id] = count = failures.get(change_id, 0) + 1
        if count > retry.max_attempts:  # (cannot happen: record_failure counts every attempt)
            raise RuntimeError(f"change {change_id} keeps failing: {error}")
        log.info("change %s: attempt %s failed (%s); retrying", change_id, count, error)
        sleep(retry.delay(count))


@dataclass(frozen=True)
class OutcomeSummary:
    """A run's end: its changes' executions by status, and the webhooks sent now."""

    executions_by_status: dict[str, int]
    webhooks_delivered: int
    webhooks_failed: int


def summarize_outcome(
    sessions: sessionmaker[Session], settings: Settings, change_ids: Sequence[int]
) -> OutcomeSummary:
    """Send the queued webhooks and count the executions of `change_ids` by status."""
    delivered = deliver_pending(sessions, settings)
    with sessions.begin() as session:
        by_status = {
            str(status): int(n)
            for status, n in session.execute(
                select(WorkflowExecution.status, func.count())
                .where(WorkflowExecution.change_id.in_(list(change_ids)))
                .group_by(WorkflowExecution.status)
            )
        }
        with_skips(by_status, skipped_total(session, change_ids=list(change_ids)))
    return OutcomeSummary(by_status, delivered.delivered, delivered.failed)


def tenant_groups(session: Session, change_ids: Sequence[int]) -> list[tuple[str, list[int]]]:
    """`change_ids` split by tenant, each part in the given order (an entity belongs to one
    tenant, so per-entity order holds); tenants in order of their first change."""
    tenant_of: dict[int, str] = {}
    for start in range(0, len(change_ids), 1000):
        part = list(change_ids[start : start + 1000])
        rows = session.execute(
            select(EntityChange.id, EntityChange.tenant_id).where(EntityChange.id.in_(part))
        )
        tenant_of.update((int(cid), str(tenant)) for cid, tenant in rows)
    groups: dict[str, list[int]] = {}
    for cid in change_ids:
        groups.setdefault(tenant_of[cid], []).append(cid)
    return list(groups.items())


# --- the synchronous consumer (`gov-pipeline process --sync`) --------------------------------
