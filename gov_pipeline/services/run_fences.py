"""Run fences: the database side of a lease token.

A worker that ends a run another worker held (that worker's lease expired: it was cut off,
or died) fences the run here before failing it; every transaction of the run checks for
the fence before it commits, so a run process that comes back late commits nothing its
retry does. On PostgreSQL the two serialise on an advisory lock of the run: the check
takes it shared, the fence exclusive, so a fence waits for the run's transaction in flight
and, once written, no later one of that run commits. (A transaction of a cut-off host
holds its lock until PostgreSQL ends the session: the fence waits up to `lock_timeout_ms`
and is tried again on the next recovery pass.) On SQLite, one writer at a time orders them.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.bulk import insert_ignore
from gov_pipeline.db.models import RunFence
from gov_pipeline.domain.errors import RunFencedError

_LOCK_KEY = "gov_pipeline.run:"


def _lock(session: Session, run_id: str, shared: bool) -> None:
    if session.get_bind().dialect.name != "postgresql":
        return
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    session.execute(text(f"SELECT {function}(hashtext(:key))"), {"key": _LOCK_KEY + run_id})


def refuse_if_fenced(session: Session, run_id: str) -> None:
    """In a transaction of the run `run_id`, just before it commits.

    Raises:
        RunFencedError: another worker ended the run; the caller rolls back.
    """
    _lock(session, run_id, shared=True)
    fence = session.get(RunFence, run_id)
    if fence is not None:
        raise RunFencedError(run_id, fence.reason)


def fence_run(
    sessions: sessionmaker[Session], run_id: str, token: str, reason: str,
    lock_timeout_ms: int = 5000,
) -> bool:  # fmt: skip
    """Fence the run (idempotent): from the commit on, none of its transactions commits.
    False if a transaction of the run still holds its lock after `lock_timeout_ms` (the
    run is not fenced yet: try again later)."""
    try:
        with sessions.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"))
            _lock(session, run_id, shared=False)
            insert_ignore(session, RunFence, [{"run_id": run_id, "token": token, "reason": reason}])
    except OperationalError as exc:
        if "lock timeout" in str(exc):
            return False
        raise
    return True
