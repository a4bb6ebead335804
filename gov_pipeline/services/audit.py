"""What an audit export reads: each kind of record, its table and the timestamp that puts a
row in a period, and a tenant's rows of a period in id order, streamed through a server-side
cursor or read a page at a time (keyset on id), over a session the caller owns."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, String, literal, select
from sqlalchemy.orm import Session

from gov_pipeline.db.engine import is_postgres
from gov_pipeline.db.models import (
    ActionRun,
    Approval,
    ApprovalDecision,
    Base,
    EntityChange,
    WorkflowExecution,
)
from gov_pipeline.domain.audit import Period


@dataclass(frozen=True)
class ExportKind:
    """One file of an export: `name` (the file's stem), its table, and `selected_by`, the
    column whose time must fall in the period."""

    name: str
    model: type[Base]
    selected_by: str
    description: str

    @property
    def table(self) -> str:
        return str(self.model.__tablename__)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column of the table, in the table's order (the order of the files)."""
        return tuple(str(c.name) for c in self.model.__table__.columns)


KINDS: tuple[ExportKind, ...] = (
    ExportKind(
        "changes", EntityChange, "created_at",
        "every captured insert, update, status change, deletion and approval decision",
    ),
    ExportKind("executions", WorkflowExecution, "created_at", "workflow executions started"),
    ExportKind("action_runs", ActionRun, "created_at", "the actions those executions ran"),
    ExportKind("approvals", Approval, "decided_at", "approval steps decided"),
    ExportKind(
        "decisions", ApprovalDecision, "created_at",
        "decisions submitted by any writer, accepted or refused",
    ),
)  # fmt: skip


def _bound(session: Session, at: datetime) -> Any:
    """`at` as the database compares it with a stored time.

    SQLite keeps times as text, with three fraction digits from the capture triggers and six
    from the application; the shortest text of the instant (no trailing zeros) compares with
    both as their instants do, so a row exactly at `from` is in and one exactly at `to` out.
    """
    if is_postgres(session):
        return at
    text = at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return literal(text, String)


def _rows_of(
    session: Session, kind: ExportKind, tenant_id: str, period: Period, after_id: int | None
) -> Select[Any]:
    table = kind.model.__table__
    column = table.c[kind.selected_by]
    where: list[ColumnElement[bool]] = [
        column >= _bound(session, period.start),
        column < _bound(session, period.end),
    ]
    if after_id is None:
        where.append(table.c.tenant_id == tenant_id)
    else:
        # Keyset pages: with the tenant's index the database would sort every later row of
        # the tenant for each page; comparing an expression leaves it the primary key range
        # (id > after_id), read in order, so a page costs a page.
        where += [(table.c.tenant_id + "") == tenant_id, table.c.id > after_id]
    return select(table).where(*where).order_by(table.c.id)


def _dicts(result: Any, rows: Iterable[Any]) -> list[dict[str, Any]]:
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in rows]


def stream_rows(
    session: Session, kind: ExportKind, *, tenant_id: str, period: Period, page_size: int
) -> Iterator[list[dict[str, Any]]]:
    """Every row of `kind` of the tenant whose `selected_by` time is in `period`, in id
    order, `page_size` at a time from one query through a server-side cursor (PostgreSQL
    sends the rows as they are fetched). Each row is a dict of its columns in the table's
    order (times aware, UTC; JSON columns decoded). The session must stay open meanwhile."""
    statement = _rows_of(session, kind, tenant_id, period, after_id=None)
    result = session.execute(statement.execution_options(yield_per=page_size))
    for part in result.partitions():
        yield _dicts(result, part)


def read_page(
    session: Session,
    kind: ExportKind,
    *,
    tenant_id: str,
    period: Period,
    after_id: int,
    limit: int,
) -> list[dict[str, Any]]:
    """The next `limit` rows of `kind` (as `stream_rows`) with an id above `after_id`, for
    a reader that reads each page in a short transaction of its own (keyset pagination)."""
    result = session.execute(_rows_of(session, kind, tenant_id, period, after_id).limit(limit))
    return _dicts(result, result)
