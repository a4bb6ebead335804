"""Deadline reminders: run `on_deadline_approaching` / `on_deadline_passed` workflows for
the records whose deadline date is near or past: a policy's, risk's or SOP's
`next_review_date`, a requirement's or task's `due_date`, an exception's `expiry_date`
(`EntityKind.deadline_field`).

Once per date: an execution's dedupe key is `deadline:<trigger>:<id>:<date>` (with the
entity type before the id for types other than policy), so running the schedule again on
the same day (or every day until the date) finds the rows already there; moving the date
makes the record due for a reminder again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, defer, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.bulk import insert_ignore
from gov_pipeline.db.models import ENTITY_MODELS, Record, Workflow, WorkflowExecution
from gov_pipeline.domain.entities import EntityKind, kind_of
from gov_pipeline.domain.errors import TransientExecutionError
from gov_pipeline.domain.retry import RetryPolicy
from gov_pipeline.domain.statuses import EntityType, ExecutionStatus, Trigger, WorkflowStatus
from gov_pipeline.engine.facts import entity_only_facts
from gov_pipeline.runners.retries import attempt_execution, with_retries
from gov_pipeline.services.workflows import LoadedWorkflow, load_version

log = logging.getLogger(__name__)

DEADLINE_TRIGGERS = (Trigger.ON_DEADLINE_APPROACHING, Trigger.ON_DEADLINE_PASSED)
# Rows per INSERT / ids per IN list: well under SQLite's bound-parameter limit.
CHUNK = 500

DEFAULT_RETRY = RetryPolicy()

T = TypeVar("T")


@dataclass
class ReminderReport:
    """What one reminder run did: executions created (skipped ones included), run, skipped
    (conditions false), failed, and executions created per workflow name."""

    created: int = 0
    ran: int = 0
    skipped: int = 0
    failed: int = 0
    by_workflow: dict[str, int] = field(default_factory=dict)


def dedupe_key(trigger: str, kind: EntityKind, record: Record) -> str:
    assert kind.deadline_field is not None  # only kinds with a deadline are selected
    day: date = getattr(record, kind.deadline_field)
    # Policies keep the key of the policy-only form, so a reminder is never sent twice.
    which = (
        str(record.id)
        if kind.entity_type is EntityType.POLICY
        else f"{kind.entity_type}:{record.id}"
    )
    return f"deadline:{trigger}:{which}:{day.isoformat()}"


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def due_records_query(kind: EntityKind, loaded: LoadedWorkflow, today: date) -> Select[Any]:
    """The workflow's tenant's live records whose deadline date its trigger covers on
    `today`: approaching, `today <= date <= today + days_before_deadline`; passed,
    `date < today`."""
    assert kind.deadline_field is not None
    model = ENTITY_MODELS[kind.entity_type]
    review = getattr(model, kind.deadline_field)
    query = select(model).where(
        model.tenant_id == loaded.tenant_id, model.deleted_at.is_(None), review.is_not(None)
    )
    if "content" in kind.columns:
        # Conditions and facts never see the content; a policy may hold megabytes of it.
        query = query.options(defer(model.content))  # type: ignore[union-attr]
    query = query.order_by(model.id)
    if loaded.definition.trigger == Trigger.ON_DEADLINE_PASSED:
        return query.where(review < today)
    days = loaded.definition.days_before_deadline or 0
    return query.where(review >= today, review <= today + timedelta(days=days))


def _deadline_workflows(session: Session) -> list[Workflow]:
    return list(
        session.scalars(
            select(Workflow)
            .where(
                Workflow.status == WorkflowStatus.ACTIVE,
                Workflow.trigger.in_(DEADLINE_TRIGGERS),
            )
            .order_by(Workflow.tenant_id, Workflow.priority.desc(), Workflow.id)
        )
    )


def _match_workflow(
    session: Session, loaded: LoadedWorkflow, today: date, report: ReminderReport
) -> list[int]:
    """Create the workflow's executions for its due records (once per deadline date).

    Returns:
        The ids of its pending executions among them (new, or left by an earlier run).
    """
    trigger = loaded.definition.trigger
    kind = kind_of(loaded.definition.entity_type)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for record in session.scalars(due_records_query(kind, loaded, today)):
        facts = entity_only_facts(record, trigger)
        status, reason = ExecutionStatus.PENDING, None
        if not loaded.condition.evaluate(facts):
            failed = loaded.condition.explain(facts)
            status, reason = ExecutionStatus.SKIPPED, "conditions not met: " + "; ".join(failed)
        rows.append(
            {
                "tenant_id": loaded.tenant_id, "workflow_id": loaded.id,
                "workflow_version": loaded.version,
                "dedupe_key": dedupe_key(trigger, kind, record), "change_id": None,
                "entity_type": str(kind.entity_type), "entity_id": str(record.id),
                "status": status, "status_reason": reason,
                "error": None, "input": facts, "caused_by_execution_id": None,
                "chain_depth": 0, "created_at": now, "updated_at": now, "attempts": 0,
                "finished_at": now if status is ExecutionStatus.SKIPPED else None,
            }
        )  # fmt: skip
    created = 0
    for chunk in _chunks(rows):
        created += insert_ignore(session, WorkflowExecution, list(chunk))
    keys = [row["dedupe_key"] for row in rows]
    pending: list[int] = []
    skipped = 0
    for chunk in _chunks(keys):
        found = session.execute(
            select(WorkflowExecution.id, WorkflowExecution.status, WorkflowExecution.created_at)
            .where(
                WorkflowExecution.workflow_id == loaded.id,
                WorkflowExecution.dedupe_key.in_(chunk),
            )
            .order_by(WorkflowExecution.id)
        ).all()
        pending.extend(eid for eid, status, _ in found if status == ExecutionStatus.PENDING)
        # Skipped rows written by this run (an earlier run's rows carry an earlier time).
        skipped += sum(
            1 for _, status, at in found if status == ExecutionStatus.SKIPPED and at == now
        )
    report.created += created
    report.skipped += skipped
    report.by_workflow[loaded.name] = report.by_workflow.get(loaded.name, 0) + created
    log.info(
        "deadline workflow %s (%s, tenant %s): %s due, %s created, %s skipped, %s to run",
        loaded.id, trigger, loaded.tenant_id, len(rows), created, skipped, len(pending),
    )  # fmt: skip
    return sorted(pending)


def run_review_reminders(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    today: date,
    run_id: str | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    sleep: Callable[[float], None] = time.sleep,
) -> ReminderReport:
    """Remind once per review date: match every active deadline workflow (all tenants)
    against its tenant's due records, then run the pending executions with retries.

    Args:
        today: the day the schedule runs for (the window is computed from it).
        run_id: the Dagster run id to record on the executions run.
        retry: attempts and backoff per execution; `sleep` waits between attempts.

    Returns:
        Counts of executions created, run, skipped and failed, and created per workflow.
    """
    report = ReminderReport()
    pending: list[int] = []
    with sessions.begin() as session:
        workflow_ids = [w.id for w in _deadline_workflows(session)]
    for workflow_id in workflow_ids:
        # One transaction per workflow: its executions appear all together or not at all.
        with sessions.begin() as session:
            workflow = session.get(Workflow, workflow_id)
            if workflow is None or kind_of(workflow.entity_type).deadline_field is None:
                continue
            loaded = load_version(session, workflow)
            pending.extend(_match_workflow(session, loaded, today, report))
    for execution_id in pending:
        try:
            attempt = partial(
                attempt_execution, sessions, execution_id, settings, retry.max_attempts, run_id
            )
            ran = with_retries(attempt, retry, sleep)
        except TransientExecutionError:
            ran = None  # attempts used up: record_failure has failed it
        if ran is not None:
            report.ran += 1
    report.failed = _count_failed(sessions, pending)
    return report


def _count_failed(sessions: sessionmaker[Session], execution_ids: list[int]) -> int:
    failed = 0
    with sessions.begin() as session:
        for chunk in _chunks(execution_ids):
            failed += len(
                session.scalars(
                    select(WorkflowExecution.id).where(
                        WorkflowExecution.id.in_(chunk),
                        WorkflowExecution.status == ExecutionStatus.FAILED,
                    )
                ).all()
            )
    return failed
