"""The invariant checker: do the stored facts show the guarantees held?

Read only, over a session the caller owns. Each invariant reports how many things it
checked, how many violated it, and a capped list of examples (ids). Shared by
`gov-pipeline verify` and the tests.

The invariants:
- `changes_processed`: every committed change older than the grace window has a
  `processed_changes` row (no change is lost);
- `one_execution_per_change`: at most one execution per (workflow, change);
- `effects_once`: one action run per (execution, step key); at most one notification per
  (action run, recipient), one task and one webhook delivery per action run, one email per
  notification, every effect row points at an existing action run, and no execution caused
  more status changes than it ran `change_status` actions;
- `per_entity_order`: for each (tenant, entity, workflow), executions that started did so in
  change-id order (`started_at` never goes backwards as the change id grows);
- `lifecycle_followed`: for every governed entity type, each record's status is one of its
  lifecycle's, and each captured status change is a move the lifecycle allows (unless the
  writer declared a lifecycle override, which the change records);
- `no_stuck_executions`: no execution `in_progress` (its transaction would have ended) and no
  execution still `pending` while its change is processed, past the stuck window;
- `dagster_runs`, in `gov_pipeline.checks.runs` (it needs a Dagster instance and
  Redis): every run is ended, or QUEUED and in line in Redis, or STARTING/STARTED/CANCELING
  with a live lease in Redis (past the grace window).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gov_pipeline.db.models import (
    ENTITY_MODELS,
    ActionRun,
    EmailDelivery,
    EntityChange,
    Notification,
    ProcessedChange,
    Task,
    WebhookDelivery,
    WorkflowExecution,
)
from gov_pipeline.domain.entities import KINDS
from gov_pipeline.domain.lifecycle import LIFECYCLES
from gov_pipeline.domain.statuses import ActionRunStatus, ChangeKind, EntityType, ExecutionStatus
from gov_pipeline.services.skips import skip_rows, skipped_pairs, skipped_total, with_skips

DEFAULT_GRACE_S = 60.0
DEFAULT_STUCK_S = 600.0
EXAMPLES_CAP = 20

_Q = TypeVar("_Q")


@dataclass
class InvariantResult:
    """One invariant: what was checked, how many violations, some examples."""

    name: str
    description: str
    checked: int = 0
    violations: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)
    note: str | None = None

    def add(self, example: dict[str, Any], cap: int = EXAMPLES_CAP) -> None:
        self.violations += 1
        kind = str(example.get("kind", self.name))
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if len(self.examples) < cap:
            self.examples.append(example)

    @property
    def ok(self) -> bool:
        return self.violations == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "ok": self.ok,
            "checked": self.checked, "violations": self.violations,
            "by_kind": self.by_kind, "examples": self.examples, "note": self.note,
        }  # fmt: skip


@dataclass
class VerifyReport:
    """Every invariant's result and the figures of the data checked."""

    invariants: list[InvariantResult]
    figures: dict[str, Any]
    checked_at: datetime
    tenant: str | None = None

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.invariants)

    @property
    def violations(self) -> int:
        return sum(i.violations for i in self.invariants)

    def get(self, name: str) -> InvariantResult:
        return next(i for i in self.invariants if i.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "violations": self.violations, "tenant": self.tenant,
            "checked_at": self.checked_at.isoformat(),
            "invariants": [i.to_dict() for i in self.invariants], "figures": self.figures,
        }  # fmt: skip

    def summary(self) -> str:
        """One line per violated invariant (empty when all hold)."""
        return "\n".join(
            f"{i.name}: {i.violations} violation(s), e.g. {i.examples[:3]}"
            for i in self.invariants
            if not i.ok
        )


def _scoped(query: _Q, column: Any, tenant: str | None) -> _Q:
    """`query` limited to one tenant's rows when `tenant` is given."""
    if tenant is None:
        return query
    scoped: Any = query
    return cast(_Q, scoped.where(column == tenant))


def check_changes_processed(
    session: Session, tenant: str | None, before: datetime, cap: int
) -> InvariantResult:
    result = InvariantResult(
        "changes_processed", "every committed change (past the grace window) was processed"
    )
    old_enough = _scoped(
        select(func.count()).select_from(EntityChange).where(EntityChange.created_at < before),
        EntityChange.tenant_id,
        tenant,
    )
    result.checked = int(session.scalar(old_enough) or 0)
    missing = _scoped(
        select(EntityChange.id, EntityChange.tenant_id, EntityChange.entity_id, EntityChange.kind)
        .where(
            EntityChange.created_at < before,
            ~select(ProcessedChange.change_id)
            .where(ProcessedChange.change_id == EntityChange.id)
            .exists(),
        )
        .order_by(EntityChange.id),
        EntityChange.tenant_id,
        tenant,
    )
    for change_id, tenant_id, entity_id, kind in session.execute(missing):
        result.add({"change_id": change_id, "tenant_id": tenant_id, "entity_id": entity_id,
                    "kind": kind}, cap)  # fmt: skip
    return result


def check_one_execution_per_change(
    session: Session, tenant: str | None, cap: int
) -> InvariantResult:
    result = InvariantResult(
        "one_execution_per_change", "at most one execution per (workflow, change)"
    )
    with_change = _scoped(
        select(func.count())
        .select_from(WorkflowExecution)
        .where(WorkflowExecution.change_id.is_not(None)),
        WorkflowExecution.tenant_id,
        tenant,
    )
    result.checked = int(session.scalar(with_change) or 0)
    duplicated = _scoped(
        select(WorkflowExecution.workflow_id, WorkflowExecution.change_id, func.count())
        .where(WorkflowExecution.change_id.is_not(None))
        .group_by(WorkflowExecution.workflow_id, WorkflowExecution.change_id)
        .having(func.count() > 1)
        .order_by(WorkflowExecution.change_id),
        WorkflowExecution.tenant_id,
        tenant,
    )
    for workflow_id, change_id, n in session.execute(duplicated):
        result.add({"workflow_id": workflow_id, "change_id": change_id, "executions": n}, cap)
    _add_skipped_and_run(session, tenant, cap, result)
    return result


def _add_skipped_and_run(
    session: Session, tenant: str | None, cap: int, result: InvariantResult
) -> None:
    """A (workflow, change) both in a skip row and with an execution was decided twice."""
    pairs = set(skipped_pairs(session, tenant))
    result.checked += len(pairs)
    changes = sorted({change_id for _, change_id in pairs})
    for start in range(0, len(changes), 1000):
        query = _scoped(
            select(WorkflowExecution.workflow_id, WorkflowExecution.change_id).where(
                WorkflowExecution.change_id.in_(changes[start : start + 1000])
            ),
            WorkflowExecution.tenant_id,
            tenant,
        )
        for workflow_id, change_id in session.execute(query):
            if (int(workflow_id), int(change_id or 0)) in pairs:
                result.add(
                    {"workflow_id": workflow_id, "change_id": change_id, "executions": 1,
                     "also_skipped": True}, cap,
                )  # fmt: skip


def _duplicates(
    session: Session, model: Any, keys: Sequence[Any], tenant: str | None
) -> list[tuple[Any, ...]]:
    query = _scoped(
        select(*keys, func.count())
        .where(*(k.is_not(None) for k in keys))
        .group_by(*keys)
        .having(func.count() > 1),
        model.tenant_id,
        tenant,
    )
    return [tuple(row) for row in session.execute(query)]


# Effect rows that must be unique, by the columns that identify one effect.
_UNIQUE_EFFECTS: tuple[tuple[str, Any, tuple[Any, ...]], ...] = (
    ("action_run", ActionRun, (ActionRun.execution_id, ActionRun.step_key)),
    ("notification", Notification, (Notification.action_run_id, Notification.user_id)),
    ("task", Task, (Task.action_run_id,)),
    ("webhook_delivery", WebhookDelivery, (WebhookDelivery.action_run_id,)),
    ("email_delivery", EmailDelivery, (EmailDelivery.notification_id,)),
)
# Effect rows that point at the action run that made them.
_EFFECTS_OF_RUNS: tuple[tuple[str, Any], ...] = (
    ("notification", Notification),
    ("task", Task),
    ("webhook_delivery", WebhookDelivery),
)


def check_effects_once(session: Session, tenant: str | None, cap: int) -> InvariantResult:
    result = InvariantResult(
        "effects_once",
        "each action effect exactly once: one action run per step, one notification per "
        "recipient, one task and one delivery per action run, no orphan effect, no extra "
        "status change",
    )
    result.checked = int(
        session.scalar(
            _scoped(select(func.count()).select_from(ActionRun), ActionRun.tenant_id, tenant)
        )
        or 0
    )
    _add_duplicate_effects(session, tenant, cap, result)
    _add_orphan_effects(session, tenant, cap, result)
    _add_extra_status_changes(session, tenant, cap, result)
    return result


def _add_duplicate_effects(
    session: Session, tenant: str | None, cap: int, result: InvariantResult
) -> None:
    for kind, model, keys in _UNIQUE_EFFECTS:
        for row in _duplicates(session, model, keys, tenant):
            names = [k.key for k in keys]
            result.add({"kind": f"duplicate_{kind}", **dict(zip(names, row[:-1], strict=True)),
                        "rows": row[-1]}, cap)  # fmt: skip


def _add_orphan_effects(
    session: Session, tenant: str | None, cap: int, result: InvariantResult
) -> None:
    for kind, model in _EFFECTS_OF_RUNS:
        orphans = _scoped(
            select(model.id, model.action_run_id).where(
                model.action_run_id.is_not(None),
                ~select(ActionRun.id).where(ActionRun.id == model.action_run_id).exists(),
            ),
            model.tenant_id,
            tenant,
        )
        for effect_id, run_id in session.execute(orphans):
            result.add({"kind": f"orphan_{kind}", "id": effect_id, "action_run_id": run_id}, cap)


def _add_extra_status_changes(
    session: Session, tenant: str | None, cap: int, result: InvariantResult
) -> None:
    """A status change caused by an execution comes from one of its change_status actions."""
    caused: dict[int, int] = dict(
        session.execute(  # type: ignore[arg-type]
            _scoped(
                select(EntityChange.caused_by_execution_id, func.count())
                .where(
                    EntityChange.caused_by_execution_id.is_not(None),
                    EntityChange.kind == ChangeKind.STATUS_CHANGED,
                )
                .group_by(EntityChange.caused_by_execution_id),
                EntityChange.tenant_id,
                tenant,
            )
        ).all()
    )
    if not caused:
        return
    moves: dict[int, int] = dict(
        session.execute(
            select(ActionRun.execution_id, func.count())
            .where(
                ActionRun.action_type == "change_status",
                ActionRun.status == ActionRunStatus.COMPLETED,
                ActionRun.execution_id.in_(list(caused)),
            )
            .group_by(ActionRun.execution_id)
        ).all()
    )
    for execution_id, n in sorted(caused.items()):
        if n > moves.get(execution_id, 0):
            result.add({"kind": "extra_status_change", "execution_id": execution_id,
                        "status_changes": n, "change_status_runs": moves.get(execution_id, 0)},
                       cap)  # fmt: skip


def check_per_entity_order(session: Session, tenant: str | None, cap: int) -> InvariantResult:
    result = InvariantResult(
        "per_entity_order",
        "per (tenant, entity, workflow), executions started in change-id (commit) order",
    )
    rows: list[Any] = session.execute(  # type: ignore[assignment]
        _scoped(
            select(
                WorkflowExecution.tenant_id,
                WorkflowExecution.entity_type,
                WorkflowExecution.entity_id,
                WorkflowExecution.workflow_id,
                WorkflowExecution.change_id,
                WorkflowExecution.id,
                WorkflowExecution.started_at,
            )
            .where(
                WorkflowExecution.change_id.is_not(None),
                WorkflowExecution.started_at.is_not(None),
            )
            .order_by(
                WorkflowExecution.tenant_id,
                WorkflowExecution.entity_type,
                WorkflowExecution.entity_id,
                WorkflowExecution.workflow_id,
                WorkflowExecution.change_id,
            ),
            WorkflowExecution.tenant_id,
            tenant,
        )
    ).all()
    previous: tuple[Any, ...] | None = None
    for tenant_id, entity_type, entity_id, workflow_id, change_id, execution_id, started in rows:
        result.checked += 1
        key = (tenant_id, entity_type, entity_id, workflow_id)
        if previous is not None and previous[0] == key and started < previous[3]:
            result.add({
                "tenant_id": tenant_id, "entity_type": entity_type, "entity_id": entity_id,
                "workflow_id": workflow_id,
                "earlier_change_id": previous[1], "earlier_execution_id": previous[2],
                "earlier_started_at": previous[3].isoformat(),
                "change_id": change_id, "execution_id": execution_id,
                "started_at": started.isoformat(),
            }, cap)  # fmt: skip
        previous = (key, change_id, execution_id, started)
    result.note = "executions that never started (failed before, skipped) are not ordered"
    return result


def check_lifecycle_followed(session: Session, tenant: str | None, cap: int) -> InvariantResult:
    result = InvariantResult(
        "lifecycle_followed",
        "every record in a status of its lifecycle, every status change a move it allows "
        "(or a declared override)",
    )
    for entity_type, kind in KINDS.items():
        model = ENTITY_MODELS[entity_type]
        statuses = set(kind.lifecycle.statuses)
        query = _scoped(
            select(model.id, model.status).where(model.status.not_in(statuses)),
            model.tenant_id,
            tenant,
        )
        for record_id, status in session.execute(query):
            result.add({"kind": "unknown_status", "entity_type": str(entity_type),
                        "entity_id": str(record_id), "status": status}, cap)  # fmt: skip
        result.checked += int(
            session.scalar(
                _scoped(select(func.count()).select_from(model), model.tenant_id, tenant)
            )
            or 0
        )
    moves = _scoped(
        select(
            EntityChange.id, EntityChange.entity_type, EntityChange.entity_id,
            EntityChange.old_values, EntityChange.new_values,
        )
        .where(
            EntityChange.kind == ChangeKind.STATUS_CHANGED,
            EntityChange.lifecycle_override.is_(None),
        )
        .order_by(EntityChange.id),
        EntityChange.tenant_id,
        tenant,
    )  # fmt: skip
    for change_id, entity_type, entity_id, old, new in session.execute(moves).yield_per(1000):
        result.checked += 1
        lifecycle = LIFECYCLES.get(EntityType(entity_type)) if entity_type in KINDS else None
        source, target = (old or {}).get("status"), (new or {}).get("status")
        if lifecycle is None or not lifecycle.allows(str(source), str(target)):
            result.add({"kind": "illegal_move", "change_id": change_id, "entity_type": entity_type,
                        "entity_id": entity_id, "from": source, "to": target}, cap)  # fmt: skip
    result.note = "moves made under a declared lifecycle override are not checked"
    return result


def check_no_stuck_executions(
    session: Session, tenant: str | None, before: datetime, cap: int
) -> InvariantResult:
    result = InvariantResult(
        "no_stuck_executions",
        "no execution in_progress, nor pending after its change was processed, past the "
        "stuck window",
    )
    result.checked = int(
        session.scalar(
            _scoped(
                select(func.count()).select_from(WorkflowExecution),
                WorkflowExecution.tenant_id,
                tenant,
            )
        )
        or 0
    )
    in_progress = _scoped(
        select(WorkflowExecution.id, WorkflowExecution.change_id, WorkflowExecution.updated_at)
        .where(
            WorkflowExecution.status == ExecutionStatus.IN_PROGRESS,
            WorkflowExecution.updated_at < before,
        )
        .order_by(WorkflowExecution.id),
        WorkflowExecution.tenant_id,
        tenant,
    )
    for execution_id, change_id, updated in session.execute(in_progress):
        result.add({"kind": "in_progress", "execution_id": execution_id, "change_id": change_id,
                    "since": updated.isoformat()}, cap)  # fmt: skip
    pending = _scoped(
        select(WorkflowExecution.id, WorkflowExecution.change_id, WorkflowExecution.updated_at)
        .join(ProcessedChange, ProcessedChange.change_id == WorkflowExecution.change_id)
        .where(
            WorkflowExecution.status == ExecutionStatus.PENDING,
            WorkflowExecution.updated_at < before,
            ProcessedChange.processed_at < before,
        )
        .order_by(WorkflowExecution.id),
        WorkflowExecution.tenant_id,
        tenant,
    )
    for execution_id, change_id, updated in session.execute(pending):
        result.add({"kind": "pending_after_processed", "execution_id": execution_id,
                    "change_id": change_id, "since": updated.isoformat()}, cap)  # fmt: skip
    return result


def _counts(session: Session, query: Any) -> dict[str, int]:
    return {str(key): int(n) for key, n in session.execute(query).all()}


def figures(session: Session, tenant: str | None) -> dict[str, Any]:
    """Counts of the data: changes, processed, executions by status, effects."""

    def total(model: Any) -> int:
        query = _scoped(select(func.count()).select_from(model), model.tenant_id, tenant)
        return int(session.scalar(query) or 0)

    return {
        "changes": total(EntityChange),
        "changes_by_entity_type": {str(t): 0 for t in KINDS}
        | _counts(
            session,
            _scoped(
                select(EntityChange.entity_type, func.count()).group_by(EntityChange.entity_type),
                EntityChange.tenant_id,
                tenant,
            ),
        ),
        "records_by_entity_type": {str(t): total(ENTITY_MODELS[t]) for t in KINDS},
        "processed": total(ProcessedChange),
        "executions": total(WorkflowExecution),
        "executions_by_status": with_skips(
            _counts(
                session,
                _scoped(
                    select(WorkflowExecution.status, func.count()).group_by(
                        WorkflowExecution.status
                    ),
                    WorkflowExecution.tenant_id,
                    tenant,
                ),
            ),
            skipped_total(session, tenant=tenant),
        ),
        "change_skips": skip_rows(session, tenant),
        "action_runs": total(ActionRun),
        "notifications": total(Notification),
        "tasks": total(Task),
        "webhook_deliveries_by_status": _counts(
            session,
            _scoped(
                select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status),
                WebhookDelivery.tenant_id,
                tenant,
            ),
        ),
        # Emails that failed for good count here (`failed`): `notifications emails` lists them.
        "email_deliveries_by_status": _counts(
            session,
            _scoped(
                select(EmailDelivery.status, func.count()).group_by(EmailDelivery.status),
                EmailDelivery.tenant_id,
                tenant,
            ),
        ),
    }


def verify(
    session: Session,
    *,
    tenant: str | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    stuck_s: float = DEFAULT_STUCK_S,
    now: datetime | None = None,
    cap: int = EXAMPLES_CAP,
    only: Iterable[str] | None = None,
) -> VerifyReport:
    """Check every invariant over the stored data (read only).

    Args:
        session: a session the caller owns; nothing is written.
        tenant: only this tenant's rows (and runs tagged with it); all when None.
        grace_s: changes (and runs) younger than this are not expected to be done yet.
        stuck_s: how long an execution may stay in_progress (or pending after its change
            was processed) before it counts as stuck.
        now: the time the windows are measured back from (default: now, UTC).
        cap: at most this many examples per invariant.
        only: check only these invariants (by name).

    Returns:
        A `VerifyReport`; `report.ok` is True when every invariant holds.
    """
    now = now or datetime.now(UTC)
    grace_before = now - timedelta(seconds=grace_s)
    stuck_before = now - timedelta(seconds=stuck_s)
    wanted = set(only) if only is not None else None
    results: list[InvariantResult] = []

    def want(name: str) -> bool:
        return wanted is None or name in wanted

    if want("changes_processed"):
        results.append(check_changes_processed(session, tenant, grace_before, cap))
    if want("one_execution_per_change"):
        results.append(check_one_execution_per_change(session, tenant, cap))
    if want("effects_once"):
        results.append(check_effects_once(session, tenant, cap))
    if want("per_entity_order"):
        results.append(check_per_entity_order(session, tenant, cap))
    if want("lifecycle_followed"):
        results.append(check_lifecycle_followed(session, tenant, cap))
    if want("no_stuck_executions"):
        results.append(check_no_stuck_executions(session, tenant, stuck_before, cap))
    data = figures(session, tenant)
    return VerifyReport(results, data, now, tenant)


def lost_and_duplicated(report: VerifyReport) -> tuple[int, int]:
    """The two headline figures: changes not processed; duplicated executions or effects."""
    effects = report.get("effects_once").by_kind
    duplicated = report.get("one_execution_per_change").violations + sum(
        n for kind, n in effects.items() if kind.startswith(("duplicate_", "extra_"))
    )
    return report.get("changes_processed").violations, duplicated
