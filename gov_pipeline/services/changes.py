"""The commit-safe change reader: read changes after a cursor, at most N.

PostgreSQL hands out ids before commit, so a plain `id > cursor` poll skips a row whose
transaction commits after a later id was read. The cursor therefore remembers *gaps*: ids
below its watermark that were not visible when read. A gap is returned as soon as its row
becomes visible, and dropped once every transaction that could have written it has ended
(the snapshot xmin has passed an xid drawn by the read that first saw the gap): it was
rolled back. Ids are drawn only by transactions that already have an xid
(`gov_next_change_id`), which is what makes that horizon safe.

SQLite has one writer at a time, so ids are handed out in commit order; an id rolled back
may be handed out again, but only above every committed id, so no gap can fill later.

Within one entity, id order is commit order: every change of a policy is written while its
row is locked. So reading in id order keeps per-policy order.

A cursor kept outside the application database (the change sensor's, in Dagster's storage)
can outlive it: restored to an earlier point or recreated, the database hands out the ids
above the restore point again, and a plain watermark would skip those new changes. The
cursor therefore carries an *anchor*, the creation time of the change at its watermark; a
read first checks that this change is still there, and refuses the cursor if it is not.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, or_, select, text
from sqlalchemy.orm import Session

from gov_pipeline.db.engine import is_postgres
from gov_pipeline.db.models import EntityChange, ProcessedChange
from gov_pipeline.domain.errors import CursorMismatchError, InvalidInputError

# Above this many gap ranges the oldest are checked first and the rest wait a read.
MAX_GAP_RANGES_PER_READ = 500


@dataclass(frozen=True, order=True)
class Gap:
    """Ids `lo..hi` (inclusive) not visible when first seen; `horizon` is that snapshot's xmax."""

    lo: int
    hi: int
    horizon: int


@dataclass(frozen=True)
class ChangeCursor:
    """Where a reader is: every id <= `watermark` was returned, except those in `gaps`;
    `anchor` identifies the change at the watermark (its creation time), when known."""

    watermark: int = 0
    gaps: tuple[Gap, ...] = ()
    anchor: str | None = None

    def encode(self) -> str:
        data: dict[str, object] = {
            "w": self.watermark,
            "g": [[g.lo, g.hi, g.horizon] for g in self.gaps],
        }
        if self.anchor is not None:
            data["a"] = self.anchor
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | None) -> ChangeCursor:
        """Parse a cursor; `None` or `""` is the start of the table.

        A bare integer (the form of a plain id cursor) is accepted as a watermark.

        Raises:
            InvalidInputError: `raw` is not a cursor.
        """
        if raw is None or raw.strip() == "":
            return cls()
        try:
            data = json.loads(raw)
            if isinstance(data, int) and not isinstance(data, bool):
                return cls(watermark=data)
            gaps = tuple(sorted(Gap(int(lo), int(hi), int(h)) for lo, hi, h in data.get("g", [])))
            anchor = data.get("a")
            if anchor is not None and not isinstance(anchor, str):
                raise TypeError(anchor)
            return cls(watermark=int(data["w"]), gaps=gaps, anchor=anchor)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise InvalidInputError("cursor", f"not a change cursor: {raw[:80]!r}") from None

    @property
    def pending_gap_ids(self) -> int:
        return sum(g.hi - g.lo + 1 for g in self.gaps)


@dataclass(frozen=True)
class ChangeBatch:
    changes: list[EntityChange]
    cursor: ChangeCursor
    # True when `limit` cut the read short: more visible changes are waiting.
    has_more: bool = False


def _stamp(created_at: datetime) -> str:
    """A creation time as text, the same whatever the session's time zone."""
    if created_at.tzinfo is not None:
        created_at = created_at.astimezone(UTC)
    return created_at.isoformat()


def anchor_of(change: EntityChange) -> str:
    return _stamp(change.created_at)


def anchor_at(session: Session, change_id: int) -> str | None:
    """The anchor of the change with this id; None if there is none."""
    created = session.scalar(select(EntityChange.created_at).where(EntityChange.id == change_id))
    return None if created is None else _stamp(created)


def check_anchor(session: Session, cursor: ChangeCursor) -> None:
    """Refuse a cursor whose watermark change is gone or is another change.

    Raises:
        CursorMismatchError: the change table is not the one the cursor was read from.
    """
    if cursor.anchor is None or cursor.watermark == 0:
        return  # nothing read yet, or a cursor from before anchors
    found = anchor_at(session, cursor.watermark)
    if found != cursor.anchor:
        raise CursorMismatchError(cursor.watermark, cursor.anchor, found)


def _snapshot_xmin(session: Session) -> int:
    """The xmin of a fresh PostgreSQL snapshot: every older transaction has ended."""
    return int(
        session.execute(
            text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        ).scalar_one()
    )


def _horizon_above_writers(session: Session) -> int:
    """An xid above that of every transaction that could have drawn a gap id just seen.

    The writer of a gap drew its xid before its id, and its id before a visible id that was
    drawn and committed before our read. This transaction's own xid, assigned now, is
    therefore above the writer's. (Snapshot xmax is not: it is one past the highest
    *completed* xid, and a writer still running can hold an xid at or above it.)
    """
    return int(session.execute(text("SELECT pg_current_xact_id()::text::bigint")).scalar_one())


def _missing_ranges(start: int, ids: Sequence[int], end: int) -> list[tuple[int, int]]:
    """Ranges of ids in (start, end] that are not in sorted `ids`."""
    ranges: list[tuple[int, int]] = []
    expected = start + 1
    for i in ids:
        if i > expected:
            ranges.append((expected, i - 1))
        expected = max(expected, i + 1)
    if end >= expected:
        ranges.append((expected, end))
    return ranges


def _subtract(gap: Gap, seen: Sequence[int]) -> list[Gap]:
    inside = [i for i in seen if gap.lo <= i <= gap.hi]
    if not inside:
        return [gap]
    return [Gap(lo, hi, gap.horizon) for lo, hi in _missing_ranges(gap.lo - 1, inside, gap.hi)]


def read_changes(session: Session, cursor: ChangeCursor | str | None, limit: int) -> ChangeBatch:
    """Return committed changes after `cursor`, in id order, at most `limit`.

    Never skips a committed change and never returns one twice for the same cursor.
    READ COMMITTED is enough: xmin is taken before the rows are read (so a gap whose horizon
    it has passed and whose row is still invisible was rolled back), and a new gap's horizon
    is this transaction's own xid, drawn after the read (so it is above the gap's writer).
    On PostgreSQL a read that finds a new gap therefore needs a writable transaction.

    Args:
        session: the caller's session.
        cursor: the cursor returned by the previous read (`None` to start at the beginning).
        limit: the most changes to return (>= 1).

    Returns:
        The changes, the cursor to pass next time, and whether more are waiting.

    Raises:
        InvalidInputError: bad cursor or limit.
        CursorMismatchError: the change at the cursor's watermark is gone or is another
            change (the database was restored or recreated behind the cursor).
    """
    if limit < 1:
        raise InvalidInputError("limit", f"must be >= 1, got {limit}")
    cur = cursor if isinstance(cursor, ChangeCursor) else ChangeCursor.decode(cursor)
    check_anchor(session, cur)
    postgres = is_postgres(session)
    xmin = _snapshot_xmin(session) if postgres else 0
    checked_gaps = cur.gaps[:MAX_GAP_RANGES_PER_READ]
    wanted = [EntityChange.id > cur.watermark]
    wanted += [EntityChange.id.between(g.lo, g.hi) for g in checked_gaps]
    query = select(EntityChange).where(or_(*wanted)).order_by(EntityChange.id).limit(limit)
    rows = list(session.scalars(query))
    ids = [r.id for r in rows]
    has_more = len(rows) == limit
    new_watermark = max([cur.watermark, *ids])
    anchor = anchor_of(rows[-1]) if ids and ids[-1] == new_watermark else cur.anchor
    if not postgres:
        # One writer at a time: a missing id was rolled back (if reused, it comes above).
        return ChangeBatch(rows, ChangeCursor(new_watermark, anchor=anchor), has_more)

    gaps = _gaps_to_recheck(session, cur, checked_gaps, ids, has_more, new_watermark, xmin)
    return ChangeBatch(
        changes=rows,
        cursor=ChangeCursor(new_watermark, gaps, anchor),
        has_more=has_more,
    )


def _gaps_to_recheck(
    session: Session,
    cur: ChangeCursor,
    checked_gaps: tuple[Gap, ...],
    ids: list[int],
    has_more: bool,
    new_watermark: int,
    xmin: int,
) -> tuple[Gap, ...]:
    """After a PostgreSQL read of `ids`: the gaps the next read must look at again, sorted.

    A checked gap stays (in the parts `ids` did not fill) unless its writer has ended; the
    ids missing below `new_watermark` become gaps whose horizon is drawn now, after the read;
    the gaps this read did not check are carried over.
    """
    # Every visible candidate up to `reach` was returned; gaps above it were not looked at.
    reach = ids[-1] if has_more else None
    gaps: list[Gap] = []
    for gap in checked_gaps:
        for part in _subtract(gap, ids):
            looked_at = reach is None or part.lo <= reach
            if looked_at and part.horizon <= xmin:
                continue  # its writer has ended: it was rolled back
            gaps.append(part)
    above = [i for i in ids if i > cur.watermark]
    missing = _missing_ranges(cur.watermark, above, new_watermark)
    if missing:
        horizon = _horizon_above_writers(session)
        gaps += [Gap(lo, hi, horizon) for lo, hi in missing]
    gaps += cur.gaps[MAX_GAP_RANGES_PER_READ:]
    return tuple(sorted(gaps))


def unprocessed() -> ColumnElement[bool]:
    """The condition "this change has no processed marker", for queries on EntityChange."""
    marker = select(ProcessedChange.change_id).where(ProcessedChange.change_id == EntityChange.id)
    return ~marker.exists()
