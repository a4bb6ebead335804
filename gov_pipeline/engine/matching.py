"""Matching changes to workflows, in the caller's transaction: one execution per (workflow,
change) that matched (or was refused), and one `change_skips` row per change listing the
workflows it did not match, with the reason (compact skips)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gov_pipeline.config import Settings
from gov_pipeline.db.bulk import insert_ignore
from gov_pipeline.db.models import ChangeSkip, EntityChange, Record, WorkflowExecution
from gov_pipeline.domain.statuses import ExecutionStatus
from gov_pipeline.domain.triggers import TRIGGERS_BY_KIND
from gov_pipeline.engine.facts import build_facts
from gov_pipeline.services.entities import load_entities
from gov_pipeline.services.workflows import LoadedWorkflow, active_workflows


@dataclass
class MatchReport:
    """What matching one change did."""

    change_id: int
    matched: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    executions: list[int] = field(default_factory=list)


def match_change(session: Session, change: EntityChange, settings: Settings) -> MatchReport:
    """Create the executions a change calls for (once), recording why others were skipped."""
    return match_changes(session, [change], settings)[0]


def match_changes(
    session: Session, changes: Sequence[EntityChange], settings: Settings
) -> list[MatchReport]:
    """`match_change` for many changes: one read of their entities, one read of the
    candidate workflows per (tenant, entity type, triggers), one INSERT per 1,000 rows.

    A replay (the change was matched before, its processing did not finish) finds its
    executions there and leaves out the workflows its skip row lists: a workflow decided
    for a change stays decided, whatever the entity looks like now.
    """
    entities = load_entities(session, changes)
    skipped_before = _skips_of(session, [c.id for c in changes])
    candidates_by: dict[tuple[str, str, tuple[str, ...]], list[LoadedWorkflow]] = {}
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    skips: dict[int, list[dict[str, Any]]] = {}
    reports: list[MatchReport] = []
    for change in changes:
        report = MatchReport(change.id)
        reports.append(report)
        triggers = TRIGGERS_BY_KIND.get(change.kind, ())
        key = (change.tenant_id, change.entity_type, triggers)
        if key not in candidates_by:
            candidates_by[key] = active_workflows(session, *key)
        decided = {int(s["workflow_id"]) for s in skipped_before.get(change.id, [])}
        candidates = [w for w in candidates_by[key] if w.id not in decided]
        if not candidates:
            continue
        entity = entities.get((change.tenant_id, change.entity_type, change.entity_id))
        executions, skipped = _execution_rows(change, entity, candidates, settings, now, report)
        rows.extend(executions)
        if skipped:
            skips[change.id] = skipped
    # A replayed change finds its rows already there.
    for start in range(0, len(rows), 1000):
        insert_ignore(session, WorkflowExecution, rows[start : start + 1000])
    _write_skips(session, changes, skips, skipped_before, now)
    by_change = pending_executions_of(session, [c.id for c in changes])
    for report in reports:
        report.executions = by_change.get(report.change_id, [])
    return reports


def _execution_rows(
    change: EntityChange,
    entity: Record | None,
    candidates: Sequence[LoadedWorkflow],
    settings: Settings,
    now: datetime,
    report: MatchReport,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An execution row per candidate workflow that matched (pending) or was refused
    (failed), and the skip entry of each one that did not match, with the reason."""
    base = build_facts(change, entity, "")  # the entity read once for every candidate
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for loaded in candidates:
        # A plain str in the facts: a failed condition quotes it by repr.
        trigger = loaded.definition.trigger.value
        facts = {**base, "trigger": trigger}
        status, reason = ExecutionStatus.PENDING, None
        if entity is None:
            reason = (
                f"{change.entity_type} {change.entity_id} not found in tenant {change.tenant_id}"
            )
        elif not loaded.condition.evaluate(facts):
            failed = loaded.condition.explain(facts)
            reason = "conditions not met: " + "; ".join(failed)
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
        if status is ExecutionStatus.PENDING and reason is not None:
            skipped.append(
                {"workflow_id": loaded.id, "workflow_version": loaded.version, "reason": reason}
            )
            continue
        rows.append(
            {
                "tenant_id": change.tenant_id, "workflow_id": loaded.id,
                "workflow_version": loaded.version, "dedupe_key": f"change:{change.id}",
                "change_id": change.id, "entity_type": change.entity_type,
                "entity_id": change.entity_id, "status": status,
                "status_reason": reason,
                "error": reason if status is ExecutionStatus.FAILED else None,
                "input": facts,  # the facts an execution runs on
                "caused_by_execution_id": change.caused_by_execution_id,
                "chain_depth": change.chain_depth,
                "finished_at": now if status is not ExecutionStatus.PENDING else None,
                "created_at": now, "updated_at": now, "attempts": 0,
            }
        )  # fmt: skip
    return rows, skipped


def _skips_of(session: Session, change_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """The skip rows of these changes: change id -> its skipped workflows."""
    found: dict[int, list[dict[str, Any]]] = {}
    for start in range(0, len(change_ids), 1000):
        part = list(change_ids[start : start + 1000])
        query = select(ChangeSkip.change_id, ChangeSkip.workflows).where(
            ChangeSkip.change_id.in_(part)
        )
        found.update((int(cid), list(workflows)) for cid, workflows in session.execute(query))
    return found


def _write_skips(
    session: Session,
    changes: Sequence[EntityChange],
    skips: dict[int, list[dict[str, Any]]],
    before: dict[int, list[dict[str, Any]]],
    now: datetime,
) -> None:
    """One skip row per change with skips (multi-row INSERTs); a replay that skipped more
    workflows (activated since) adds them to its row."""
    tenant_of = {c.id: c.tenant_id for c in changes}
    new = [
        {"change_id": cid, "tenant_id": tenant_of[cid], "workflows": workflows,
         "skipped": len(workflows), "created_at": now}
        for cid, workflows in skips.items()
        if cid not in before
    ]  # fmt: skip
    for start in range(0, len(new), 1000):
        insert_ignore(session, ChangeSkip, new[start : start + 1000])
    for cid, workflows in skips.items():
        if cid in before:
            merged = [*before[cid], *workflows]
            session.execute(
                update(ChangeSkip)
                .where(ChangeSkip.change_id == cid)
                .values(workflows=merged, skipped=len(merged))
            )


def pending_executions_of(session: Session, change_ids: Sequence[int]) -> dict[int, list[int]]:
    """Executions of these changes still to run (new, or left by a failed attempt):
    change id -> execution ids in id order."""
    found: dict[int, list[int]] = {}
    for start in range(0, len(change_ids), 1000):
        query = (
            select(WorkflowExecution.change_id, WorkflowExecution.id)
            .where(
                WorkflowExecution.change_id.in_(change_ids[start : start + 1000]),
                WorkflowExecution.status == ExecutionStatus.PENDING,
            )
            .order_by(WorkflowExecution.id)
        )
        for change_id, execution_id in session.execute(query):
            if change_id is not None:  # (the filter above makes it so)
                found.setdefault(change_id, []).append(execution_id)
    return found
