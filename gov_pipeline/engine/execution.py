"""Running an execution: claim it and run its actions in the caller's transaction.

Effectively once: an execution is unique per (workflow, change); running it starts with a
claim (`UPDATE ... WHERE status = 'pending'`) and everything it does — action runs,
notifications, tasks, status moves, outbox rows, its final status — commits in that one
transaction. A crash rolls all of it back and a retry does it again, once. Two processors
on the same change (the sync path and a Dagster run) meet at the claim; one of them finds
nothing left to do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gov_pipeline.config import Settings
from gov_pipeline.db.bulk import buffer_rows, draw_id, insert_ignore, update_later
from gov_pipeline.db.models import ActionRun, EntityChange, Workflow, WorkflowExecution
from gov_pipeline.domain.errors import action_failed
from gov_pipeline.domain.statuses import ActionRunStatus, ExecutionStatus
from gov_pipeline.engine.actions.base import ActionContext
from gov_pipeline.engine.actions.registry import handler_for
from gov_pipeline.services.entities import load_entity
from gov_pipeline.services.workflows import LoadedWorkflow, load_version

log = logging.getLogger(__name__)


def writes_entity(action: Any) -> bool:
    """Whether `action` writes the entity itself (the rest write rows of their own, or the
    execution: an `assign` to the execution's assignee)."""
    if action.type == "assign":
        return bool(action.target != "assignee")
    return bool(action.type == "change_status")


@dataclass
class ExecutionReport:
    execution_id: int
    workflow: str
    status: str
    actions: list[str] = field(default_factory=list)


def insert_marker(
    session: Session,
    execution: WorkflowExecution,
    step_key: str,
    action_type: str,
    result: dict[str, Any] | None = None,
) -> int | None:
    """Write a completed action-run row that marks something as done for this execution.

    Returns:
        Its id, or None if the marker already existed (the thing was done before).
    """
    now = datetime.now(UTC)
    if not insert_ignore(
        session,
        ActionRun,
        {
            "tenant_id": execution.tenant_id, "execution_id": execution.id,
            "step_key": step_key, "action_type": action_type,
            "status": ActionRunStatus.COMPLETED, "attempts": 1, "result": result,
            "created_at": now, "finished_at": now,
        },
    ):  # fmt: skip
        return None
    return int(
        session.scalars(
            select(ActionRun.id).where(
                ActionRun.execution_id == execution.id, ActionRun.step_key == step_key
            )
        ).one()
    )


def claim(
    session: Session, execution_id: int, from_status: ExecutionStatus, **values: Any
) -> WorkflowExecution | None:
    """Take an execution for this transaction; None if another processor already did.

    Args:
        values: more columns to set in the same statement.

    Returns:
        The execution as the claim left it (read by the same statement).
    """
    # On PostgreSQL the UPDATE waits on the row lock of a concurrent claimer and re-checks
    # the status; on SQLite the transaction already holds the write lock (BEGIN IMMEDIATE).
    claimed = session.execute(
        update(WorkflowExecution)
        .where(WorkflowExecution.id == execution_id, WorkflowExecution.status == from_status)
        .values(status=ExecutionStatus.IN_PROGRESS, updated_at=datetime.now(UTC), **values)
        .returning(WorkflowExecution)
        # The returned row refreshes the execution's object (populate_existing); no other
        # object can match, so the ORM need not look through the session for them.
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    return claimed.scalars().one_or_none()


def run_actions(
    session: Session,
    settings: Settings,
    loaded: LoadedWorkflow,
    execution: WorkflowExecution,
    actions: Sequence[Any],
    prefix: str = "",
) -> tuple[list[str], bool]:
    """Run `actions` in order inside the caller's transaction.

    Returns:
        The step keys run, and whether one of them asked for approval.

    Raises:
        ActionFailedError: an action raised (the caller's transaction must roll back).
    """
    entity = load_entity(session, execution.tenant_id, execution.entity_type, execution.entity_id)
    change = session.get(EntityChange, execution.change_id) if execution.change_id else None
    facts = dict(execution.input or {})
    done: list[str] = []
    awaiting = False
    for index, action in enumerate(actions):
        step_key = f"{prefix}{action.id or index}"
        run = ActionRun(
            # Drawn ahead (PostgreSQL): written once, with its outcome, not written then
            # updated; the action's own rows refer to it.
            id=draw_id(session, "action_runs"),
            tenant_id=execution.tenant_id,
            execution_id=execution.id,
            step_key=step_key,
            action_type=action.type,
            status=ActionRunStatus.PENDING,
            attempts=execution.attempts + 1,
            created_at=datetime.now(UTC),
        )
        if run.id is None:  # the insert assigns the id the action's own rows refer to
            session.add(run)
            session.flush()
        ctx = ActionContext(session, settings, loaded, execution, entity, change, run, facts)
        try:
            result = handler_for(action.type)(ctx, action)
        except Exception as exc:
            raise action_failed(step_key, action.type, exc) from exc
        run.status = ActionRunStatus.COMPLETED
        run.result = result
        run.finished_at = datetime.now(UTC)
        if not buffer_rows(session, [run]):  # else with the chunk's rows, at its end
            session.add(run)
        done.append(step_key)
        awaiting = awaiting or bool(result.get("awaiting"))
        if entity is not None and writes_entity(action):
            # Later readers see the entity as this action left it: read again, if one does.
            session.expire(entity)
    return done, awaiting


def run_execution(
    session: Session, execution_id: int, settings: Settings, run_id: str | None = None
) -> ExecutionReport | None:
    """Run a pending execution's actions in the caller's transaction (claim first).

    Returns:
        What it did, or None if the execution was not pending (done by someone else).

    Raises:
        ActionFailedError: an action failed; the caller rolls back and decides on a retry.
    """
    execution = claim(session, execution_id, ExecutionStatus.PENDING)
    if execution is None:
        return None
    return run_claimed(session, execution, settings, run_id)


def claim_pending_of(
    session: Session, change_ids: Sequence[int]
) -> dict[int, list[WorkflowExecution]]:
    """Claim every pending execution of these changes with one statement: change id ->
    its executions in id order, now `in_progress` for this transaction.

    Rows are locked in id order (two processors claiming overlapping chunks wait on each
    other instead of deadlocking); a row a concurrent claimer took is re-checked after its
    commit and left out. The caller runs them all or rolls its transaction back.
    """
    if not change_ids:
        return {}
    pending = (
        select(WorkflowExecution.id)
        .where(
            WorkflowExecution.change_id.in_(list(change_ids)),
            WorkflowExecution.status == ExecutionStatus.PENDING,
        )
        .order_by(WorkflowExecution.id)
        .with_for_update()
    )
    claimed = session.execute(
        update(WorkflowExecution)
        .where(
            WorkflowExecution.id.in_(pending.scalar_subquery()),
            WorkflowExecution.status == ExecutionStatus.PENDING,
        )
        .values(status=ExecutionStatus.IN_PROGRESS, updated_at=datetime.now(UTC))
        .returning(WorkflowExecution)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    found: dict[int, list[WorkflowExecution]] = {}
    for execution in sorted(claimed.scalars(), key=lambda e: e.id):
        found.setdefault(int(execution.change_id or 0), []).append(execution)
    return found


def run_claimed(
    session: Session, execution: WorkflowExecution, settings: Settings, run_id: str | None
) -> ExecutionReport:
    """Run a claimed execution's actions in the caller's transaction; its start, run and
    outcome are written with one UPDATE: at the next flush, or with the chunk's rows at its
    end when the session keeps them back (`start_buffering`).

    Raises:
        ActionFailedError: an action failed; the caller rolls back and decides on a retry.
    """
    now = datetime.now(UTC)
    workflow = session.get(Workflow, execution.workflow_id)
    assert workflow is not None  # foreign key
    loaded = load_version(session, workflow, execution.workflow_version)
    done, awaiting = run_actions(session, settings, loaded, execution, loaded.definition.actions)
    status = ExecutionStatus.AWAITING_APPROVAL if awaiting else ExecutionStatus.COMPLETED
    outcome: dict[str, Any] = {
        "status": status, "attempts": execution.attempts + 1, "error": None,
        "output": {"actions": done}, "started_at": execution.started_at or now,
        "finished_at": None if awaiting else now,
        "dagster_run_id": run_id or execution.dagster_run_id, "updated_at": now,
    }  # fmt: skip
    update_later(session, execution, outcome)
    log.info("execution %s (%s) %s: %s", execution.id, loaded.name, status, done)
    return ExecutionReport(execution.id, loaded.name, status, done)
