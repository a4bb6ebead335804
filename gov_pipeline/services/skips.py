"""Reading compact skips (`change_skips`: one row per change, listing the workflows it did
not match and why) beside the execution rows, for the readers that show or count
executions: `executions list`, run outcomes, the governance outcomes and `verify`.

A skip has no execution id; it shows as a `skipped` entry with the change's id, the
workflow and the reason. Skipped execution rows (manual runs, deadlines, schedules, and
changes matched before compact skips) are still execution rows: readers count both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from gov_pipeline.db.models import ChangeSkip, EntityChange, Workflow

_IDS_PER_QUERY = 1000


def skipped_total(
    session: Session, *, tenant: str | None = None, change_ids: Sequence[int] | None = None
) -> int:
    """How many (workflow, change) skips the skip rows hold (of `tenant`, of `change_ids`)."""
    if change_ids is not None:
        total = 0
        for start in range(0, len(change_ids), _IDS_PER_QUERY):
            part = list(change_ids[start : start + _IDS_PER_QUERY])
            query = select(func.coalesce(func.sum(ChangeSkip.skipped), 0)).where(
                ChangeSkip.change_id.in_(part)
            )
            total += int(session.scalar(_of_tenant(query, tenant)) or 0)
        return total
    query = select(func.coalesce(func.sum(ChangeSkip.skipped), 0))
    return int(session.scalar(_of_tenant(query, tenant)) or 0)


def with_skips(by_status: dict[str, int], skipped: int) -> dict[str, int]:
    """Execution rows by status, with `skipped` skips of the skip rows counted as
    `skipped` executions (the dict is updated and returned)."""
    if skipped:
        by_status["skipped"] = by_status.get("skipped", 0) + skipped
    return by_status


def skip_rows(session: Session, tenant: str | None = None) -> int:
    """How many changes have a skip row."""
    query = select(func.count()).select_from(ChangeSkip)
    return int(session.scalar(_of_tenant(query, tenant)) or 0)


def skipped_pairs(session: Session, tenant: str | None = None) -> Iterator[tuple[int, int]]:
    """Every (workflow id, change id) the skip rows hold, change by change."""
    query = _of_tenant(select(ChangeSkip.change_id, ChangeSkip.workflows), tenant)
    for change_id, workflows in session.execute(query.order_by(ChangeSkip.change_id)):
        for entry in workflows:
            yield int(entry["workflow_id"]), int(change_id)


def skips_by_workflow(session: Session, since: datetime) -> Counter[tuple[str, str]]:
    """Skips of the changes matched since `since`: (tenant, workflow name) -> count."""
    names = {int(i): str(n) for i, n in session.execute(select(Workflow.id, Workflow.name))}
    found: Counter[tuple[str, str]] = Counter()
    query = select(ChangeSkip.tenant_id, ChangeSkip.workflows).where(ChangeSkip.created_at >= since)
    for tenant, workflows in session.execute(query):
        for entry in workflows:
            found[(str(tenant), names.get(int(entry["workflow_id"]), "?"))] += 1
    return found


def list_skips(
    session: Session,
    tenant_id: str,
    *,
    workflow: str | None = None,
    entity: tuple[str, str] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The newest skips of the tenant as entries like `executions list` rows (`id` None):
    newest change first, a change's skips in workflow order; at most `limit`."""
    names = {
        int(i): str(n)
        for i, n in session.execute(
            select(Workflow.id, Workflow.name).where(Workflow.tenant_id == tenant_id)
        )
    }
    wanted = {i for i, n in names.items() if n == workflow} if workflow is not None else None
    query = (
        select(ChangeSkip, EntityChange.entity_type, EntityChange.entity_id)
        .join(EntityChange, EntityChange.id == ChangeSkip.change_id)
        .where(ChangeSkip.tenant_id == tenant_id)
        .order_by(ChangeSkip.change_id.desc())
    )
    if entity is not None:
        query = query.where(
            EntityChange.entity_type == entity[0], EntityChange.entity_id == entity[1]
        )
    entries: list[dict[str, Any]] = []
    for skip, entity_type, entity_id in session.execute(query.execution_options(yield_per=200)):
        for item in skip.workflows:
            workflow_id = int(item["workflow_id"])
            if wanted is not None and workflow_id not in wanted:
                continue
            entries.append(
                {"id": None, "tenant_id": skip.tenant_id, "workflow_id": workflow_id,
                 "workflow": names.get(workflow_id, "?"),
                 "workflow_version": item.get("workflow_version"),
                 "change_id": skip.change_id, "entity_type": entity_type,
                 "entity_id": entity_id, "status": "skipped", "status_reason": item["reason"],
                 "error": None, "attempts": 0,
                 "created_at": skip.created_at.isoformat(), "finished_at": None}
            )  # fmt: skip
            if len(entries) >= limit:
                return entries
    return entries


def _of_tenant(query: Select[Any], tenant: str | None) -> Select[Any]:
    condition: ColumnElement[bool] | None = (
        ChangeSkip.tenant_id == tenant if tenant is not None else None
    )
    return query if condition is None else query.where(condition)
