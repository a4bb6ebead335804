"""Stranded changes: committed a while ago, never marked processed.

The change sensor reads each change once. If every run holding a change failed for good
before matching it (a run process killed with its retries used up, the database down for
longer than the op retries), nothing would process that change until the policy changes
again. The sweeper sensor asks this module for such changes and requests runs for them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from gov_pipeline.db.models import EntityChange
from gov_pipeline.services.changes import unprocessed


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
