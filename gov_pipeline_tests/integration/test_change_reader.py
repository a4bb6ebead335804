"""The commit-safe reader: nothing skipped, nothing twice, under interleaved writers."""

from __future__ import annotations

import random
import threading
import time

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import EntityChange
from gov_pipeline.domain.errors import CursorMismatchError
from gov_pipeline.services.changes import ChangeCursor, read_changes
from gov_pipeline_tests.integration.engine_support import restore_to_before

INSERT = """
INSERT INTO policies (tenant_id, title, policy_type, content, business_units, status, version,
                      version_number, tags, custom_fields, requires_acknowledgment,
                      created_at, updated_at)
VALUES ('acme', :title, 'Security', '', '[]', 'draft', '1.0', 1, '[]', '{}', false,
        CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)
"""


def _drain(
    engine: Engine, sessions: sessionmaker[Session], cursor: ChangeCursor, timeout: float = 60
) -> tuple[list[int], ChangeCursor]:
    """Read until no gap is left. A rolled-back gap expires once the oldest running
    transaction of the whole server is younger than it; another database's long
    transaction can delay that (nothing is lost meanwhile), so wait for it."""
    read: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        ids, batch = _read(sessions, cursor, limit=1000)
        read += ids
        cursor = batch.cursor
        if not cursor.gaps or time.monotonic() > deadline:
            return read, cursor
        _write(engine, "tick")
        time.sleep(0.05)


def _write(engine: Engine, title: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(INSERT), {"title": title})


def _read(sessions: sessionmaker[Session], cursor: ChangeCursor, limit: int = 100):  # type: ignore[no-untyped-def]
    with sessions.begin() as session:
        batch = read_changes(session, cursor, limit)
        return [c.id for c in batch.changes], batch


def test_reads_in_pages_without_repeats(
    engine: Engine, sessions: sessionmaker[Session], tenant: str
) -> None:
    for i in range(7):
        _write(engine, f"p{i}")
    cursor, seen = ChangeCursor(), []
    while True:
        ids, batch = _read(sessions, cursor, limit=3)
        seen += ids
        cursor = batch.cursor
        if not batch.has_more:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 7
    assert _read(sessions, cursor)[0] == []
    # The same cursor read again gives the same answer: nothing twice, nothing new.
    assert _read(sessions, ChangeCursor.decode(cursor.encode()))[0] == []


def test_out_of_order_commit(
    engine: Engine, sessions: sessionmaker[Session], tenant: str, is_pg: bool
) -> None:
    """Two transactions; the later id commits first; both come out exactly once."""
    early = engine.connect()
    late = engine.connect()
    try:
        t_early = early.begin()
        early.execute(text(INSERT), {"title": "early"})
        early_id = early.execute(text("SELECT max(id) FROM entity_changes")).scalar_one()
        if not is_pg:
            # SQLite has one writer: the second transaction cannot even write until the
            # first ends, so commits cannot happen out of id order.
            # Straight to the driver: a SQLAlchemy statement would begin a transaction.
            late.connection.driver_connection.execute("PRAGMA busy_timeout = 100")  # type: ignore[union-attr]
            with pytest.raises(OperationalError, match="locked"), late.begin():
                late.execute(text(INSERT), {"title": "late"})
            t_early.commit()
            _write(engine, "late")
            ids, batch = _read(sessions, ChangeCursor())
            assert len(ids) == 2 and _read(sessions, batch.cursor)[0] == []
            return
        t_late = late.begin()
        late.execute(text(INSERT), {"title": "late"})
        t_late.commit()
        ids, batch = _read(sessions, ChangeCursor())
        assert len(ids) == 1 and ids[0] > early_id  # only the committed later id
        assert batch.cursor.pending_gap_ids == 1  # the early id is remembered as a gap
        t_early.commit()
        ids2, batch2 = _read(sessions, batch.cursor)
        assert ids2 == [early_id]
        assert _read(sessions, batch2.cursor)[0] == []
        assert batch2.cursor.gaps == ()
    finally:
        early.close()
        late.close()


def test_a_rolled_back_gap_is_dropped(
    engine: Engine, sessions: sessionmaker[Session], tenant: str, is_pg: bool
) -> None:
    doomed = engine.connect()
    try:
        t = doomed.begin()
        doomed.execute(text(INSERT), {"title": "doomed"})
        doomed_id = doomed.execute(text("SELECT max(id) FROM entity_changes")).scalar_one()
        if is_pg:  # a second writer beside the open one (SQLite would wait for the lock)
            _write(engine, "kept")
            ids, batch = _read(sessions, ChangeCursor())
            assert len(ids) == 1 and batch.cursor.pending_gap_ids == 1
        t.rollback()
    finally:
        doomed.close()
    if not is_pg:
        _write(engine, "kept")
        ids, batch = _read(sessions, ChangeCursor())
        # The rolled-back id may be handed out again, but only above every committed one.
        assert len(ids) == 1 and ids[0] >= doomed_id
    ids, batch = _read(sessions, batch.cursor)
    assert ids == []
    # On PostgreSQL the gap outlives its writer until a read's xmin passes its horizon.
    _write(engine, "later")
    ids, cursor = _drain(engine, sessions, batch.cursor)
    assert len(ids) == len(set(ids)) >= 1
    assert cursor.gaps == ()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_limit_inside_gap_fills_keeps_the_rest(
    engine: Engine, sessions: sessionmaker[Session], tenant: str
) -> None:
    """PostgreSQL only: SQLite cannot hold two writers, so it never has gaps."""
    holders = [engine.connect() for _ in range(3)]
    try:
        trans = [h.begin() for h in holders]
        for i, h in enumerate(holders):
            h.execute(text(INSERT), {"title": f"held{i}"})
        _write(engine, "free")
        ids, batch = _read(sessions, ChangeCursor())
        assert len(ids) == 1 and batch.cursor.pending_gap_ids == 3
        for t in trans:
            t.commit()
    finally:
        for h in holders:
            h.close()
    first, batch = _read(sessions, batch.cursor, limit=2)
    rest, batch = _read(sessions, batch.cursor, limit=2)
    assert len(first) == 2 and len(rest) == 1
    assert batch.cursor.gaps == ()


def test_concurrent_writers_and_a_reader_lose_nothing(
    engine: Engine, sessions: sessionmaker[Session], tenant: str
) -> None:
    """Writers commit and roll back at random while a reader polls with a small limit."""
    stop = threading.Event()
    committed: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for i in range(25):
                title = f"w{seed}-{i}"
                with engine.connect() as conn:
                    trans = conn.begin()
                    conn.execute(text(INSERT), {"title": title})
                    time.sleep(rng.random() * 0.01)
                    if rng.random() < 0.2:
                        trans.rollback()
                        continue
                    trans.commit()
                with lock:
                    committed.append(title)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    read_ids: list[int] = []
    cursor = ChangeCursor()

    def reader() -> None:
        nonlocal cursor
        while True:
            ids, batch = _read(sessions, cursor, limit=5)
            read_ids.extend(ids)
            cursor = batch.cursor
            if stop.is_set() and not ids and not batch.has_more:
                return
            time.sleep(0.002)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(4)]
    reading = threading.Thread(target=reader)
    reading.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    reading.join(timeout=60)
    assert not errors, errors
    # Drain so that gaps left by rollbacks can expire.
    ids, cursor = _drain(engine, sessions, cursor)
    read_ids.extend(ids)
    assert len(read_ids) == len(set(read_ids)), "a change was returned twice"
    with sessions.begin() as session:
        all_ids = set(session.scalars(select(EntityChange.id)))
        titles = {
            c.new_values["title"] for c in session.scalars(select(EntityChange)) if c.new_values
        }
    assert set(read_ids) == all_ids, "a committed change was skipped"
    assert set(committed) <= titles
    assert cursor.gaps == ()


@pytest.mark.parametrize("written_after", [2, 6])
def test_a_cursor_that_outlived_its_change_table_is_refused(
    engine: Engine, sessions: sessionmaker[Session], tenant: str, written_after: int
) -> None:
    """Fewer new changes than the cursor had read (its change is gone) or more (its id is
    another change): either way, reading on would skip new changes, so the read refuses."""
    for i in range(4):
        _write(engine, f"before {i}")
    ids, batch = _read(sessions, ChangeCursor())
    cursor = ChangeCursor.decode(batch.cursor.encode())  # as the sensor stores it
    assert cursor.watermark == ids[-1] and cursor.anchor is not None
    assert _read(sessions, cursor)[0] == []  # the same table: the anchor holds
    restore_to_before(engine, 1)  # or recreated: the change table starts over
    for i in range(written_after):
        _write(engine, f"after {i}")
    with pytest.raises(CursorMismatchError, match="restored or recreated") as refused:
        _read(sessions, cursor)
    assert refused.value.watermark == cursor.watermark
    assert ("is gone" in str(refused.value)) == (written_after < 4)
    # A reset cursor (as the restore procedure ends) reads the new changes.
    assert len(_read(sessions, ChangeCursor())[0]) == written_after
