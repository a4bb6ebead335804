"""Scheduled workflows (`trigger: scheduled`): at a tick of a workflow's `schedule`, one
execution for every live record of its entity type, in its tenant, that its conditions
match; then the runs that execute them (the sensor in orchestration/scheduled_triggers.py
requests them, with the lane and ordering tag of change runs).

Effectively once per (workflow, tick, record): the dedupe key
`scheduled:<tick, ISO UTC>:<entity_type>:<id>` is unique per workflow, so a tick evaluated
again (by a second sensor, or after a sensor tick died between writing its executions and
Dagster keeping its cursor) writes nothing twice. It requests runs again for the executions
written since the cursor that are still pending; a run only runs an execution it can claim.

The cursor keeps, per workflow, the time up to which its ticks are handled. A workflow new
to it (just applied, or made active again) starts at the first evaluation that sees it: no
backfill. After a pause (the daemon down, the sensor stopped) only the latest missed tick
fires, once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, defer, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.bulk import insert_ignore
from gov_pipeline.db.models import ENTITY_MODELS, Record, Workflow, WorkflowExecution
from gov_pipeline.domain.batching import BatchingPolicy, PendingChange, PlannedRun, plan_runs
from gov_pipeline.domain.entities import kind_of
from gov_pipeline.domain.errors import TransientExecutionError
from gov_pipeline.domain.schedules import DueTick, due_tick, next_tick, tick_day, tick_iso
from gov_pipeline.domain.statuses import ExecutionStatus, Trigger, WorkflowStatus
from gov_pipeline.engine.execution import ExecutionReport
from gov_pipeline.engine.facts import scheduled_facts
from gov_pipeline.runners.deadlines import due_records_query
from gov_pipeline.runners.deliveries import deliver_pending
from gov_pipeline.runners.retries import attempt_execution
from gov_pipeline.services.workflows import LoadedWorkflow, load_version

log = logging.getLogger(__name__)

KEY_PREFIX = "scheduled:"
CHUNK = 500  # rows per INSERT: well under SQLite's bound-parameter limit


def dedupe_key(tick: datetime, entity_type: str, entity_id: int | str) -> str:
    """`scheduled:2025-03-31T07:00:00Z:policy:3`: one execution per workflow, tick, record."""
    return f"{KEY_PREFIX}{tick_iso(tick)}:{entity_type}:{entity_id}"


@dataclass
class ScheduleCursor:
    """Per workflow id, the time up to which its ticks are handled."""

    handled: dict[int, datetime] = field(default_factory=dict)

    @classmethod
    def decode(cls, raw: str | None) -> ScheduleCursor:
        """Raises: ValueError (or KeyError, TypeError): not a cursor of this sensor."""
        if not raw:
            return cls()
        handled = {int(k): datetime.fromisoformat(v) for k, v in json.loads(raw)["handled"].items()}
        # A time without a zone (a cursor set by hand) is UTC, as every time here.
        return cls({k: v if v.tzinfo else v.replace(tzinfo=UTC) for k, v in handled.items()})

    def encode(self) -> str:
        handled = {str(k): v.isoformat() for k, v in sorted(self.handled.items())}
        return json.dumps({"handled": handled}, sort_keys=True)


@dataclass(frozen=True)
class ScheduledRun:
    """One run to request: executions of one tick of one workflow, of one lane. Planned as
    change runs are (domain/batching.py), with the executions in place of the changes: each
    `PendingChange.id` of `planned` is an execution id."""

    workflow: str
    tick: str
    planned: PlannedRun

    @property
    def execution_ids(self) -> list[int]:
        return self.planned.change_ids

    @property
    def run_key(self) -> str:
        """Deterministic: the same executions always give the same key."""
        ids = self.execution_ids
        if len(ids) == 1:
            return f"scheduled-execution-{ids[0]}"
        digest = hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:10]
        return f"scheduled-executions-{ids[0]}-{ids[-1]}-{len(ids)}-{digest}"


@dataclass(frozen=True)
class ScheduledTick:
    """A tick of the sensor: the runs to request and the cursor to keep; when there are
    none, the sentence that says why; warnings for the operator."""

    runs: list[ScheduledRun]
    cursor: str
    skip_reason: str | None = None
    summary: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _WorkflowTick:
    """What one evaluation did for one workflow."""

    name: str
    due: DueTick | None = None
    next_at: datetime | None = None
    pending: list[PendingChange] = field(default_factory=list)
    note: str = ""
    warning: str | None = None


def _scheduled_workflow_ids(session: Session) -> list[int]:
    return list(
        session.scalars(
            select(Workflow.id)
            .where(Workflow.status == WorkflowStatus.ACTIVE, Workflow.trigger == Trigger.SCHEDULED)
            .order_by(Workflow.tenant_id, Workflow.priority.desc(), Workflow.id)
        )
    )


def _execution_row(
    loaded: LoadedWorkflow, tick: datetime, record: Record, facts: dict[str, Any], now: datetime
) -> dict[str, Any]:
    entity_type = str(loaded.definition.entity_type)
    return {
        "tenant_id": loaded.tenant_id, "workflow_id": loaded.id,
        "workflow_version": loaded.version, "change_id": None,
        "dedupe_key": dedupe_key(tick, entity_type, record.id),
        "entity_type": entity_type, "entity_id": str(record.id),
        "status": ExecutionStatus.PENDING, "status_reason": None, "error": None,
        "input": facts, "caused_by_execution_id": None, "chain_depth": 0, "attempts": 0,
        "created_at": now, "updated_at": now, "finished_at": None,
    }  # fmt: skip


def live_records_query(loaded: LoadedWorkflow, tick: datetime) -> Select[Any]:
    """The records of the workflow's entity type in its tenant, not soft-deleted, by id; with
    `days_before_deadline`, only those whose deadline date is at most that many days after
    the tick's day (the window of on_deadline_approaching, from the tick's day)."""
    entity_type = loaded.definition.entity_type
    kind = kind_of(entity_type)
    schedule = loaded.definition.schedule
    if loaded.definition.days_before_deadline is not None and kind.deadline_field and schedule:
        return due_records_query(kind, loaded, tick_day(schedule, tick))
    model = ENTITY_MODELS[entity_type]
    query = select(model).where(model.tenant_id == loaded.tenant_id, model.deleted_at.is_(None))
    if "content" in kind.columns:
        # Conditions and facts never see the content; a policy may hold megabytes of it.
        query = query.options(defer(model.content))  # type: ignore[union-attr]
    return query.order_by(model.id)


def create_tick_executions(
    session: Session, loaded: LoadedWorkflow, tick: datetime, now: datetime
) -> tuple[int, int, int]:
    """Write the executions of `tick` for the tenant's live records the workflow's conditions
    match (a record that does not match gets none: a schedule would otherwise write one
    skipped execution per record and tick). Rows already there are left alone.

    Returns:
        (records looked at, records matching, executions written now).
    """
    seen, rows = 0, []
    for record in session.scalars(live_records_query(loaded, tick)):
        seen += 1
        facts = scheduled_facts(record)
        if loaded.condition.evaluate(facts):
            rows.append(_execution_row(loaded, tick, record, facts, now))
    created = sum(
        insert_ignore(session, WorkflowExecution, rows[i : i + CHUNK])
        for i in range(0, len(rows), CHUNK)
    )
    return seen, len(rows), created


def pending_since(session: Session, loaded: LoadedWorkflow, after: datetime) -> list[PendingChange]:
    """The workflow's scheduled executions written after `after` and still pending: this
    tick's, and any a sensor tick wrote before it died (no run was requested for them)."""
    rows = session.execute(
        select(WorkflowExecution.id, WorkflowExecution.entity_type, WorkflowExecution.entity_id)
        .where(
            WorkflowExecution.workflow_id == loaded.id,
            WorkflowExecution.status == ExecutionStatus.PENDING,
            WorkflowExecution.dedupe_key.startswith(KEY_PREFIX),
            WorkflowExecution.created_at > after,
        )
        .order_by(WorkflowExecution.id)
    ).all()
    priority = loaded.definition.priority
    return [PendingChange(eid, loaded.tenant_id, et, ei, priority) for eid, et, ei in rows]


def _fire_workflow(
    session: Session, workflow_id: int, after: datetime | None, now: datetime
) -> _WorkflowTick | None:
    """Fire the workflow's latest tick in `(after, now]`, if any (None: it is gone)."""
    workflow = session.get(Workflow, workflow_id)
    if workflow is None:
        return None
    loaded = load_version(session, workflow)
    schedule = loaded.definition.schedule
    if schedule is None:
        warning = (
            f"workflow {loaded.name!r} (id {loaded.id}, tenant {loaded.tenant_id}) has trigger "
            "scheduled but no schedule (applied before schedules existed): it never fires; "
            "apply its file again with a schedule"
        )
        return _WorkflowTick(loaded.name, warning=warning)
    due = due_tick(schedule, after=after, now=now) if after is not None else None
    if after is None or due is None:
        return _WorkflowTick(loaded.name, next_at=next_tick(schedule, now))
    seen, matched, created = create_tick_executions(session, loaded, due.at, now)
    pending = pending_since(session, loaded, after)
    missed = f" (the latest of {due.missed + 1} ticks missed)" if due.missed else ""
    note = (
        f"{loaded.name!r} (tenant {loaded.tenant_id}) tick {tick_iso(due.at)}{missed}: "
        f"{matched} of {seen} {kind_of(loaded.definition.entity_type).noun} record(s) "
        f"matched, {created} execution(s) written, {len(pending)} to run"
    )
    log.info("scheduled workflow %s: %s", loaded.id, note)
    return _WorkflowTick(loaded.name, due=due, pending=pending, note=note)


def fire_scheduled_workflows(
    sessions: sessionmaker[Session],
    raw_cursor: str | None,
    settings: Settings,
    *,
    now: datetime | None = None,
) -> ScheduledTick:
    """Fire every active scheduled workflow (all tenants) whose schedule ticked since the
    cursor, one transaction per workflow, and plan the runs of their pending executions.

    Args:
        raw_cursor: the sensor's cursor (None or empty: every workflow starts at `now`).
        now: the evaluation time (default: the clock).

    Returns:
        The runs to request, the cursor to keep, what to say.
    """
    now = now or datetime.now(UTC)
    warnings: list[str] = []
    try:
        cursor = ScheduleCursor.decode(raw_cursor)
    except (ValueError, KeyError, TypeError, AttributeError):
        cursor = ScheduleCursor()
        warnings.append("the cursor is not this sensor's: every workflow starts from now")
    with sessions.begin() as session:
        workflow_ids = _scheduled_workflow_ids(session)
    batching = BatchingPolicy(settings.batch_threshold, settings.batch_size)
    runs: list[ScheduledRun] = []
    ticks: list[_WorkflowTick] = []
    for workflow_id in workflow_ids:
        with sessions.begin() as session:
            done = _fire_workflow(session, workflow_id, cursor.handled.get(workflow_id), now)
        if done is None:
            continue
        ticks.append(done)
        warnings += [done.warning] if done.warning else []
        if done.due is not None:
            planned = plan_runs(done.pending, batching, settings.routing.lane_of)
            runs += [ScheduledRun(done.name, tick_iso(done.due.at), p) for p in planned]
    encoded = ScheduleCursor(dict.fromkeys(workflow_ids, now)).encode()
    fired = [t.note for t in ticks if t.due is not None]
    if runs:
        summary = f"{'; '.join(fired)} -> {len(runs)} run(s)"
        return ScheduledTick(runs, encoded, summary=summary, warnings=warnings)
    return ScheduledTick([], encoded, _skip_reason(ticks, fired, cursor), warnings=warnings)


def _skip_reason(ticks: list[_WorkflowTick], fired: list[str], cursor: ScheduleCursor) -> str:
    if fired:
        return f"{'; '.join(fired)}: nothing to run."
    if not ticks:
        return "No active scheduled workflows."
    upcoming = [t for t in ticks if t.next_at is not None]
    if not upcoming:
        return f"None of the {len(ticks)} active scheduled workflow(s) has a schedule."
    first = min(upcoming, key=lambda t: t.next_at or datetime.max.replace(tzinfo=UTC))
    assert first.next_at is not None
    start = " (new ones start from now, no backfill)" if not cursor.handled else ""
    return (
        f"No scheduled workflow is due{start}: next, {first.name!r} at "
        f"{tick_iso(first.next_at)} ({len(ticks)} active)."
    )


@dataclass(frozen=True)
class ScheduledRunReport:
    """What a run of scheduled executions did: the executions run, and those it did not run
    (done by another run, or failed for good: the run's outcome names the failures)."""

    ran: list[ExecutionReport]
    not_run: list[int]


def run_scheduled_executions(
    sessions: sessionmaker[Session],
    settings: Settings,
    execution_ids: list[int],
    *,
    max_attempts: int,
    run_id: str | None = None,
) -> ScheduledRunReport:
    """Run each pending one of `execution_ids`, in order, one attempt each (its own
    transaction), then send the webhooks they queued.

    Raises:
        TransientExecutionError: an attempt failed and may be retried (after the others
            ran); a retry of the run runs what is still pending, each execution at most
            `max_attempts` times in all.
    """
    ran: list[ExecutionReport] = []
    not_run: list[int] = []
    retry: TransientExecutionError | None = None
    for execution_id in execution_ids:
        try:
            report = attempt_execution(sessions, execution_id, settings, max_attempts, run_id)
        except TransientExecutionError as exc:
            retry = retry or exc
            continue
        if report is None:
            not_run.append(execution_id)
        else:
            ran.append(report)
    deliver_pending(sessions, settings)
    if retry is not None:
        raise retry
    return ScheduledRunReport(ran, not_run)
