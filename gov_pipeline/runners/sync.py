"""The synchronous consumer (`gov-pipeline process --sync`): reads the change table after
its cursor and processes it in batches, owning each transaction."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.db.models import ConsumerCursor
from gov_pipeline.domain.retry import RetryPolicy
from gov_pipeline.runners.batch import process_batch
from gov_pipeline.runners.deliveries import deliver_pending
from gov_pipeline.services.changes import ChangeCursor, read_changes
from gov_pipeline.services.executions import FailedExecution, failed_since

log = logging.getLogger(__name__)


@dataclass
class ProcessStats:
    changes: int = 0
    executions: int = 0
    batches: int = 0
    seconds: float = 0.0
    # The executions that ended failed here, in id order: of the changes processed (an
    # action out of retries, the chain depth limit) or by a webhook delivery sent here.
    failed: list[FailedExecution] = field(default_factory=list)


def load_cursor(sessions: sessionmaker[Session], consumer: str) -> ChangeCursor:
    with sessions.begin() as session:
        row = session.get(ConsumerCursor, consumer)
        return ChangeCursor.decode(row.cursor if row else None)


def save_cursor(sessions: sessionmaker[Session], consumer: str, cursor: ChangeCursor) -> None:
    with sessions.begin() as session:
        row = session.get(ConsumerCursor, consumer)
        if row is None:
            session.add(ConsumerCursor(name=consumer, cursor=cursor.encode()))
        else:
            row.cursor = cursor.encode()


def process_pending(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    consumer: str = "sync",
    batch_size: int = 200,
    max_changes: int | None = None,
    retry: RetryPolicy = RetryPolicy(),
    on_progress: Callable[[ProcessStats], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ProcessStats:
    """Process every committed change after `consumer`'s cursor, in commit order.

    The cursor is saved after each batch; a crash in between means the batch is read
    again, which the engine's unique keys and the processed markers make harmless.

    Returns:
        What was done, with the executions that ended failed meanwhile (`failed`).
    """
    stats = ProcessStats()
    started = time.perf_counter()
    since = datetime.now(UTC)
    processed: list[int] = []
    cursor = load_cursor(sessions, consumer)
    while max_changes is None or stats.changes < max_changes:
        limit = batch_size if max_changes is None else min(batch_size, max_changes - stats.changes)
        with sessions.begin() as session:
            batch = read_changes(session, cursor, limit)
            ids = [c.id for c in batch.changes]
        if ids:
            done = process_batch(sessions, ids, settings, retry, sleep=sleep, processed_by=consumer)
            stats.executions += len(done.ran)
            stats.changes += len(ids)
            processed += done.changes
        cursor = batch.cursor
        save_cursor(sessions, consumer, cursor)
        stats.batches += 1
        stats.seconds = time.perf_counter() - started
        if on_progress is not None:
            on_progress(stats)
        if not ids:
            break  # (a short batch is not the end: processing may have made new changes)
    delivered = deliver_pending(sessions, settings, sleep=sleep)
    with sessions.begin() as session:
        stats.failed = failed_since(
            session, since, change_ids=processed, execution_ids=delivered.failed_executions
        )
    stats.seconds = time.perf_counter() - started
    return stats
