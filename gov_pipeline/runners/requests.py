"""Which runs the change table calls for: read the changes after a cursor (the commit-safe
reader), give each the priority of the workflows it may trigger, and group them into runs
(one per change while the backlog is small, batches when it grows). The change sensor turns
the planned runs into Dagster run requests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.models import EntityChange, Workflow
from gov_pipeline.domain.batching import (
    BatchingPolicy,
    PendingChange,
    PlannedRun,
    compact_ids,
    plan_runs,
)
from gov_pipeline.domain.statuses import WorkflowStatus
from gov_pipeline.domain.triggers import TRIGGERS_BY_KIND
from gov_pipeline.services.changes import read_changes


def _priorities(session: Session, tenants: Iterable[str]) -> dict[tuple[str, str], int]:
    """Highest priority of the active workflows, per (tenant, trigger)."""
    rows = session.execute(
        select(Workflow.tenant_id, Workflow.trigger, func.max(Workflow.priority))
        .where(Workflow.tenant_id.in_(list(tenants)), Workflow.status == WorkflowStatus.ACTIVE)
        .group_by(Workflow.tenant_id, Workflow.trigger)
    ).all()
    return {(tenant, trigger): int(priority or 0) for tenant, trigger, priority in rows}


def pending_changes(session: Session, changes: Sequence[EntityChange]) -> list[PendingChange]:
    """Changes with the priority of the workflows they may trigger."""
    priorities = _priorities(session, {c.tenant_id for c in changes})
    return [
        PendingChange(
            c.id, c.tenant_id, c.entity_type, c.entity_id,
            max((priorities.get((c.tenant_id, t), 0) for t in TRIGGERS_BY_KIND.get(c.kind, ())),
                default=0),
        )
        for c in changes
    ]  # fmt: skip


@dataclass(frozen=True)
class ChangeRequests:
    """A tick of the change sensor: the runs to request and the cursor to keep; when there
    are none, the sentence that says why."""

    runs: list[PlannedRun]
    cursor: str
    skip_reason: str | None = None
    summary: str = ""


def request_runs(
    sessions: sessionmaker[Session], cursor: str | None, settings: Settings
) -> ChangeRequests:
    """The runs the changes after `cursor` call for (at most `sensor_max_changes` read).

    Raises:
        CursorMismatchError: the cursor does not belong to this change table.
    """
    with sessions.begin() as session:
        batch = read_changes(session, cursor, settings.sensor_max_changes)
        pending = pending_changes(session, batch.changes)
    encoded = batch.cursor.encode()
    if not pending:
        waiting = batch.cursor.pending_gap_ids
        note = (
            f"; watching {waiting} change id(s) whose transactions have not committed yet"
            if waiting
            else ""
        )
        reason = f"No new changes after change {batch.cursor.watermark}{note}."
        return ChangeRequests([], encoded, skip_reason=reason)
    batching = BatchingPolicy(settings.batch_threshold, settings.batch_size)
    runs = plan_runs(pending, batching, settings.routing.lane_of)
    mode = "one run per change" if len(runs) == len(pending) else "batched"
    summary = (
        f"{len(pending)} change(s) {compact_ids([c.id for c in pending], 200)} -> "
        f"{len(runs)} run(s), {mode}{' (more waiting)' if batch.has_more else ''}"
    )
    return ChangeRequests(runs, encoded, summary=summary)
