"""Stranded changes: committed a while ago, never marked processed.

The change sensor reads each change once. If every run holding a change failed for good
before matching it (a run process killed with its retries used up, the database down for
longer than the op retries), nothing would process that change until the policy changes
again. The sweeper sensor asks this module for such changes and requests runs for them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gov_pipeline.db.models import EntityChange, ProcessedChange


def stranded_changes(session: Session, *, older_than: datetime, limit: int) -> list[EntityChange]:
    """Changes created before `older_than` with no processed marker, oldest first.

    Args:
        session: the caller's session (read only).
        older_than: changes newer than this are left to the change sensor.
        limit: at most this many.
    """
    query = (
        select(EntityChange)
        .where(
            EntityChange.created_at < older_than,
            ~select(ProcessedChange.change_id)
            .where(ProcessedChange.change_id == EntityChange.id)
            .exists(),
        )
        .order_by(EntityChange.id)
        .limit(limit)
    )
    return list(session.scalars(query))
