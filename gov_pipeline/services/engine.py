"""The workflow engine: match a change to workflows, run executions, continue approvals.

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

from sqlalchemy import func, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from gov_pipeline.actions import ActionContext, handler_for
from gov_pipeline.config import Settings
from gov_pipeline.db.engine import is_postgres
from gov_pipeline.db.models import ActionRun, EntityChange, Policy, Workflow, WorkflowExecution
from gov_pipeline.domain.errors import GovPipelineError
from gov_pipeline.domain.statuses import (
    ActionRunStatus,
    ChangeKind,
    EntityType,
    ExecutionStatus,
    Trigger,
)
from gov_pipeline.services import policies
from gov_pipeline.services.workflows import LoadedWorkflow, active_workflows, load_version

log = logging.getLogger(__name__)

# Which workflow triggers a change fires. A status change also counts as an update, as in
# the original system; a soft delete is an update of `deleted_at`.
TRIGGERS_BY_KIND: dict[str, tuple[str, ...]] = {
    ChangeKind.CREATED.value: (Trigger.ON_CREATE.value,),
    ChangeKind.UPDATED.value: (Trigger.ON_UPDATE.value,),
    ChangeKind.STATUS_CHANGED.value: (Trigger.ON_STATUS_CHANGE.value, Trigger.ON_UPDATE.value),
    ChangeKind.DELETED.value: (Trigger.ON_UPDATE.value,),
    ChangeKind.APPROVAL_DECIDED.value: (Trigger.ON_APPROVAL_DECIDED.value,),
}


# Actions that write the entity itself (the rest write rows of their own).
ENTITY_WRITING_ACTIONS = frozenset({"change_status", "assign"})


class ActionFailedError(GovPipelineError):
    """An action raised; `permanent` when retrying cannot help (bad data, illegal move)."""

    def __init__(self, step_key: str, action_type: str, cause: BaseException) -> None:
        super().__init__(f"action {step_key} ({action_type}) failed: {cause}")
        self.step_key = step_key
        self.action_type = action_type
        self.cause = cause
        self.permanent = isinstance(cause, GovPipelineError)


@dataclass
class MatchReport:
    """What matching one change did."""

    change_id: int
    matched: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    executions: list[int] = field(default_factory=list)


@dataclass
class ExecutionReport:
    execution_id: int
    workflow: str
    status: str
    actions: list[str] = field(default_factory=list)


def entity_facts(entity: Policy | None) -> dict[str, Any]:
    if entity is None:
        return {}
    return policies.policy_to_dict(entity, include_content=False)


def entity_only_facts(entity: Policy, trigger: str, actor: str | None = None) -> dict[str, Any]:
    """The condition context when no change is involved (manual runs, deadlines)."""
    return {
        "old": {}, "new": {}, "changed": [], "entity": entity_facts(entity),
        "actor": actor, "trigger": trigger,
    }  # fmt: skip


def build_facts(change: EntityChange, entity: Policy | None, trigger: str) -> dict[str, Any]:
    """The condition context of DOMAIN.md: old, new, changed, entity, actor, trigger."""
    return {
        "old": dict(change.old_values or {}),
        "new": dict(change.new_values or {}),
        "changed": list(change.changed_fields or []),
        "entity": entity_facts(entity),
        "actor": change.actor,
        "trigger": trigger,
    }


def load_entity(
    session: Session, tenant_id: str, entity_type: str, entity_id: str
) -> Policy | None:
    if entity_type != EntityType.POLICY.value or not entity_id.isdigit():
        return None
    # By primary key: an entity this transaction already loaded costs no query.
    policy = session.get(Policy, int(entity_id))
    return policy if policy is not None and policy.tenant_id == tenant_id else None


def insert_ignore(
    session: Session, model: type[Any], values: dict[str, Any] | list[dict[str, Any]]
) -> int:
    """INSERT (one row or many) that skips rows hitting a unique key.

    Many rows go as one executemany, which SQLAlchemy sends as multi-row INSERTs
    ("insertmanyvalues") without compiling a statement per call.

    Returns:
        How many rows were written.
    """
    rows = values if isinstance(values, list) else [values]
    if not rows:
        return 0
    dialect_insert = pg_insert if is_postgres(session) else sqlite_insert
    if len(rows) == 1:
        stmt = dialect_insert(model).values(rows).on_conflict_do_nothing()
        return int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]
    key = model.__mapper__.primary_key[0]
    many = dialect_insert(model).on_conflict_do_nothing().returning(key)
    # render_nulls: the ORM would leave out None values, and rows whose None columns differ
    # would go in separate statements (a 1,000-row insert became hundreds).
    return len(session.execute(many, rows, execution_options={"render_nulls": True}).all())


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
            "status": ActionRunStatus.COMPLETED.value, "attempts": 1, "result": result,
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


def load_entities(
    session: Session, changes: Sequence[EntityChange]
) -> dict[tuple[str, str, str], Policy]:
    """The entities of `changes`, one query per tenant, keyed by (tenant, type, id)."""
    wanted: dict[str, set[int]] = {}
    for change in changes:
        if change.entity_type == EntityType.POLICY.value and change.entity_id.isdigit():
            wanted.setdefault(change.tenant_id, set()).add(int(change.entity_id))
    found: dict[tuple[str, str, str], Policy] = {}
    for tenant_id, ids in wanted.items():
        rows = session.scalars(
            select(Policy).where(Policy.tenant_id == tenant_id, Policy.id.in_(sorted(ids)))
        )
        for policy in rows:
            found[(tenant_id, EntityType.POLICY.value, str(policy.id))] = policy
    return found


def match_change(session: Session, change: EntityChange, settings: Settings) -> MatchReport:
    """Create the executions a change calls for (once), recording why others were skipped."""
    return match_changes(session, [change], settings)[0]


def match_changes(
    session: Session, changes: Sequence[EntityChange], settings: Settings
) -> list[MatchReport]:
    """`match_change` for many changes: one read of their entities, one read of the
    candidate workflows per (tenant, entity type, triggers), one INSERT per 1,000 rows."""
    entities = load_entities(session, changes)
    candidates_by: dict[tuple[str, str, tuple[str, ...]], list[LoadedWorkflow]] = {}
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    reports: list[MatchReport] = []
    for change in changes:
        report = MatchReport(change.id)
        reports.append(report)
        triggers = TRIGGERS_BY_KIND.get(change.kind, ())
        key = (change.tenant_id, change.entity_type, triggers)
        if key not in candidates_by:
            candidates_by[key] = active_workflows(session, *key)
        candidates = candidates_by[key]
        if not candidates:
            continue
        entity = entities.get((change.tenant_id, change.entity_type, change.entity_id))
        rows.extend(_execution_rows(change, entity, candidates, settings, now, report))
    # A replayed change finds its rows already there.
    for start in range(0, len(rows), 1000):
        insert_ignore(session, WorkflowExecution, rows[start : start + 1000])
    by_change = pending_executions_of(session, [c.id for c in changes])
    for report in reports:
        report.executions = by_change.get(report.change_id, [])
    return reports


def _execution_rows(
    change: EntityChange,
    entity: Policy | None,
    candidates: Sequence[LoadedWorkflow],
    settings: Settings,
    now: datetime,
    report: MatchReport,
) -> list[dict[str, Any]]:
    """One execution row per candidate workflow: pending, or skipped/failed with the reason."""
    base = build_facts(change, entity, "")  # the entity read once for every candidate
    rows: list[dict[str, Any]] = []
    for loaded in candidates:
        trigger = loaded.definition.trigger.value
        facts = {**base, "trigger": trigger}
        status, reason = ExecutionStatus.PENDING, None
        if entity is None:
            status = ExecutionStatus.SKIPPED
            reason = (
                f"{change.entity_type} {change.entity_id} not found in tenant {change.tenant_id}"
            )
        elif not loaded.condition.evaluate(facts):
            failed = loaded.condition.explain(facts)
            status, reason = ExecutionStatus.SKIPPED, "conditions not met: " + "; ".join(failed)
            report.skipped[loaded.name] = failed
        elif change.chain_depth >= settings.chain_depth_limit:
            status = ExecutionStatus.FAILED
            reason = (
                f"chain depth limit {settings.chain_depth_limit} reached: change {change.id} "
                f"was caused by execution {change.caused_by_execution_id}"
            )
            report.refused[loaded.name] = reason
        else:
            report.matched.append(loaded.name)
        finished = now if status is not ExecutionStatus.PENDING else None
        rows.append(
            {
                "tenant_id": change.tenant_id, "workflow_id": loaded.id,
                "workflow_version": loaded.version, "dedupe_key": f"change:{change.id}",
                "change_id": change.id, "entity_type": change.entity_type,
                "entity_id": change.entity_id, "status": status.value,
                "status_reason": reason,
                "error": reason if status is ExecutionStatus.FAILED else None,
                # The facts an execution runs on; a skipped one keeps only its reason (its
                # change row has the rest), which keeps the bulk insert small.
                "input": None if status is ExecutionStatus.SKIPPED else facts,
                "caused_by_execution_id": change.caused_by_execution_id,
                "chain_depth": change.chain_depth, "finished_at": finished,
                "created_at": now, "updated_at": now, "attempts": 0,
            }
        )  # fmt: skip
    return rows


def pending_executions_of(session: Session, change_ids: Sequence[int]) -> dict[int, list[int]]:
    """Executions of these changes still to run (new, or left by a failed attempt):
    change id -> execution ids in id order."""
    found: dict[int, list[int]] = {}
    for start in range(0, len(change_ids), 1000):
        query = (
            select(WorkflowExecution.change_id, WorkflowExecution.id)
            .where(
                WorkflowExecution.change_id.in_(change_ids[start : start + 1000]),
                WorkflowExecution.status == ExecutionStatus.PENDING.value,
            )
            .order_by(WorkflowExecution.id)
        )
        for change_id, execution_id in session.execute(query):
            if change_id is not None:  # (the filter above makes it so)
                found.setdefault(change_id, []).append(execution_id)
    return found


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
        .where(WorkflowExecution.id == execution_id, WorkflowExecution.status == from_status.value)
        .values(status=ExecutionStatus.IN_PROGRESS.value, updated_at=datetime.now(UTC), **values)
        .returning(WorkflowExecution)
        # The returned row refreshes the execution's object (populate_existing); no other
        # object can match, so the ORM need not look through the session for them.
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    return claimed.scalars().one_or_none()


_ACTION_RUN_IDS = "gov_pipeline.action_run_ids"
ACTION_RUN_IDS_PER_DRAW = 100


def _action_run_id(session: Session) -> int | None:
    """An action-run id drawn before the action runs, so that its row is written once, with
    its outcome, instead of written then updated (on PostgreSQL, from the table's sequence,
    a hundred at a time per transaction; ids of rolled-back work are simply not used).
    None on SQLite: there the insert assigns it."""
    if not is_postgres(session):
        return None
    pool: list[int] = session.info.setdefault(_ACTION_RUN_IDS, [])
    if not pool:
        drawn = session.scalars(
            text(
                "SELECT nextval(pg_get_serial_sequence('action_runs', 'id')) "
                "FROM generate_series(1, :n)"
            ),
            {"n": ACTION_RUN_IDS_PER_DRAW},
        )
        pool.extend(sorted((int(i) for i in drawn), reverse=True))
    return pool.pop()


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
            id=_action_run_id(session),
            tenant_id=execution.tenant_id,
            execution_id=execution.id,
            step_key=step_key,
            action_type=action.type,
            status=ActionRunStatus.PENDING.value,
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
            raise ActionFailedError(step_key, action.type, exc) from exc
        run.status = ActionRunStatus.COMPLETED.value
        run.result = result
        run.finished_at = datetime.now(UTC)
        session.add(run)  # with an id drawn ahead: written once, with its outcome
        done.append(step_key)
        awaiting = awaiting or bool(result.get("awaiting"))
        if entity is not None and action.type in ENTITY_WRITING_ACTIONS:
            session.refresh(entity)  # later actions see the entity as this one left it
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
    now = datetime.now(UTC)
    # The start and the run are set by the claim itself (one statement fewer).
    started = WorkflowExecution.__table__.c.started_at
    values: dict[str, Any] = {"started_at": func.coalesce(started, literal(now, started.type))}
    if run_id:
        values["dagster_run_id"] = run_id
    execution = claim(session, execution_id, ExecutionStatus.PENDING, **values)
    if execution is None:
        return None
    workflow = session.get(Workflow, execution.workflow_id)
    assert workflow is not None  # foreign key
    loaded = load_version(session, workflow, execution.workflow_version)
    done, awaiting = run_actions(session, settings, loaded, execution, loaded.definition.actions)
    status = ExecutionStatus.AWAITING_APPROVAL if awaiting else ExecutionStatus.COMPLETED
    execution.status = status.value
    execution.attempts += 1
    execution.error = None
    execution.output = {"actions": done}
    if not awaiting:
        execution.finished_at = now
    log.info("execution %s (%s) %s: %s", execution.id, loaded.name, status.value, done)
    return ExecutionReport(execution.id, loaded.name, status.value, done)
