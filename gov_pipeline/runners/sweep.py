"""Stranded changes: committed a while ago, never marked processed.

The change sensor reads each change once. If every run holding a change failed for good
before matching it (a run process killed with its retries used up, the database down for
longer than the op retries), nothing would process that change until the policy changes
again. The sweeper sensor asks this module (`plan_sweep`) which runs to request for them.

A change is swept at most `MAX_SWEEPS` times; after that the tick names it and
`gov-pipeline verify` reports it. The sweeper's cursor keeps how often each stranded change
was swept and the id up to which every change is settled, with an anchor like the change
cursor's (services/changes.py): a database restored behind it makes the sweeper start over.
"""

from __future__ import annotations

import json
from collections.abc import Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.models import EntityChange
from gov_pipeline.domain.batching import BatchingPolicy, PlannedRun, compact_ids, plan_runs
from gov_pipeline.runners.requests import pending_changes
from gov_pipeline.services.changes import anchor_at, unprocessed

MAX_SWEEPS = 3  # times one change is requested again before the sweeper gives up on it
SWEEP_LIMIT = 2000  # changes looked at per tick


def settled_up_to(session: Session, *, after: int, older_than: datetime) -> int:
    """The highest id such that every change after `after` up to it is processed and was
    created before `older_than`: the sweeper need not look there again.

    Reads by primary key from `after` to the first change still open, so a tick costs what
    the recent changes cost, not what the table holds. (A transaction that keeps an id
    uncommitted for longer than the grace period is left to the change sensor's gaps.)
    """
    first_open = session.scalar(
        select(func.min(EntityChange.id)).where(
            EntityChange.id > after,
            or_(EntityChange.created_at >= older_than, unprocessed()),
        )
    )
    if first_open is not None:
        return int(first_open) - 1
    last = session.scalar(select(func.max(EntityChange.id)).where(EntityChange.id > after))
    return int(last) if last is not None else after


def stranded_changes(
    session: Session, *, older_than: datetime, limit: int, after: int = 0
) -> list[EntityChange]:
    """Changes after `after`, created before `older_than`, with no processed marker,
    oldest first.

    Args:
        session: the caller's session (read only).
        older_than: changes newer than this are left to the change sensor.
        limit: at most this many.
        after: ids up to this one are settled (`settled_up_to`).
    """
    query = (
        select(EntityChange)
        .where(
            EntityChange.id > after,
            EntityChange.created_at < older_than,
            unprocessed(),
        )
        .order_by(EntityChange.id)
        .limit(limit)
    )
    return list(session.scalars(query))


@dataclass
class SweepCursor:
    """How many sweeps requested runs, how often each still-stranded change was swept, and
    up to which id every change is settled (processed and past the grace period)."""

    sweeps: int = 0
    tries: dict[int, int] = field(default_factory=dict)
    after: int = 0
    anchor: str | None = None  # the change at `after` (see services/changes.py)

    @classmethod
    def decode(cls, raw: str | None) -> SweepCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        tries = {int(k): int(v) for k, v in data["tries"].items()}
        return cls(int(data.get("sweeps", 0)), tries, int(data.get("after", 0)), data.get("a"))

    def encode(self) -> str:
        data = {"sweeps": self.sweeps, "tries": self.tries, "after": self.after, "a": self.anchor}
        return json.dumps(data, sort_keys=True)


@dataclass(frozen=True)
class SweepPlan:
    """A sweeper tick: the runs to request (numbered `sweep`), the cursor to keep, and what
    to say: a skip reason when there is nothing to request, a summary otherwise, and a
    warning when the database went back behind the cursor."""

    runs: list[PlannedRun]
    cursor: str
    sweep: int
    skip_reason: str | None = None
    summary: str = ""
    warning: str | None = None


def _settle(session: Session, cursor: SweepCursor, older_than: datetime) -> str | None:
    """Move the cursor's settled-up-to id forward; start over (and say so) when the change
    it points at is gone or is another change."""
    warning = None
    if cursor.after and cursor.anchor and anchor_at(session, cursor.after) != cursor.anchor:
        warning = (
            f"change {cursor.after}, up to which every change was settled, is gone or is "
            "another change: the application database was restored or recreated; "
            "sweeping from the start"
        )
        cursor.tries, cursor.after, cursor.anchor = {}, 0, None
    settled = settled_up_to(session, after=cursor.after, older_than=older_than)
    if settled != cursor.after or cursor.anchor is None:
        cursor.after = settled
        cursor.anchor = anchor_at(session, settled) if settled else None
    return warning


def plan_sweep(
    sessions: sessionmaker[Session],
    raw_cursor: str | None,
    held: Set[int],
    settings: Settings,
    now: datetime | None = None,
) -> SweepPlan:
    """The runs for changes stranded past the grace period that no waiting or running run
    holds (`held`: their change ids), each change at most `MAX_SWEEPS` times."""
    cursor = SweepCursor.decode(raw_cursor)
    older_than = (now or datetime.now(UTC)) - timedelta(seconds=settings.sweep_grace_s)
    with sessions.begin() as session:
        warning = _settle(session, cursor, older_than)
        stranded = stranded_changes(
            session, older_than=older_than, limit=SWEEP_LIMIT, after=cursor.after
        )
        free = [c for c in stranded if c.id not in held]
        given_up = [c.id for c in free if cursor.tries.get(c.id, 0) >= MAX_SWEEPS]
        pending = pending_changes(
            session, [c for c in free if cursor.tries.get(c.id, 0) < MAX_SWEEPS]
        )
    # Forget changes that are no longer stranded (processed since).
    cursor.tries = {c.id: cursor.tries.get(c.id, 0) for c in stranded if c.id in cursor.tries}
    note = (
        f" Gave up on {len(given_up)} change(s) after {MAX_SWEEPS} sweeps: "
        f"{compact_ids(given_up, 200)} (see gov-pipeline verify)."
        if given_up
        else ""
    )
    if not pending:
        reason = (
            f"No stranded changes older than {settings.sweep_grace_s}s "
            f"({len(stranded)} unprocessed, {len(stranded) - len(free)} held by runs).{note}"
        )
        return SweepPlan([], cursor.encode(), cursor.sweeps, reason, warning=warning)
    cursor.sweeps += 1
    for change in pending:
        cursor.tries[change.id] = cursor.tries.get(change.id, 0) + 1
    batching = BatchingPolicy(settings.batch_threshold, settings.batch_size)
    runs = plan_runs(pending, batching, settings.routing.lane_of)
    summary = (
        f"sweep {cursor.sweeps}: {len(pending)} stranded change(s) "
        f"{compact_ids([c.id for c in pending], 200)} -> {len(runs)} run(s).{note}"
    )
    return SweepPlan(runs, cursor.encode(), cursor.sweeps, summary=summary, warning=warning)
