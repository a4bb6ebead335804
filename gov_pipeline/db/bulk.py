"""Bulk writes for both databases: rows that skip a unique key they hit, and rows kept
back to be written together at the end of a chunk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import cast, column, insert, text, update, values
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from gov_pipeline.db.engine import is_postgres


def insert_ignore(
    session: Session, model: type[Any], values: dict[str, Any] | list[dict[str, Any]]
) -> int:
    """INSERT (one row or many) that skips rows hitting a unique key.

    Many rows go as one executemany, which SQLAlchemy sends as multi-row INSERTs
    ("insertmanyvalues") without compiling a statement per call.

    Returns:
        How many rows were written.
    """
    rows = values if isinstance(values, list) else [values]
    if not rows:
        return 0
    dialect_insert = pg_insert if is_postgres(session) else sqlite_insert
    if len(rows) == 1:
        stmt = dialect_insert(model).values(rows).on_conflict_do_nothing()
        return int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]
    key = model.__mapper__.primary_key[0]
    many = dialect_insert(model).on_conflict_do_nothing().returning(key)
    # render_nulls: the ORM would leave out None values, and rows whose None columns differ
    # would go in separate statements (a 1,000-row insert became hundreds).
    return len(session.execute(many, rows, execution_options={"render_nulls": True}).all())


# -- rows written at the end of a chunk ---------------------------------------------------

_BUFFER = "gov_pipeline.row_buffer"


def start_buffering(session: Session) -> None:
    """From now on, rows `buffer_rows` is given wait in the session for `write_buffered`,
    which writes them with one multi-row INSERT per table (PostgreSQL: the ids are drawn
    ahead with `draw_id`, so nothing needs the row written to refer to it)."""
    if is_postgres(session):
        session.info[_BUFFER] = {}


def buffering(session: Session) -> bool:
    return _BUFFER in session.info


def buffer_rows(session: Session, objects: Sequence[Any]) -> bool:
    """Keep `objects` (new rows whose ids are set) to be written by `write_buffered`.

    Returns:
        False when the session is not buffering: the caller adds them to the session.
    """
    buffer: dict[type[Any], list[Any]] | None = session.info.get(_BUFFER)
    if buffer is None:
        return False
    for obj in objects:
        buffer.setdefault(type(obj), []).append(obj)
    return True


def update_later(session: Session, obj: Any, values: dict[str, Any]) -> None:
    """Set `values` on `obj`'s row. When the session is buffering, the UPDATE waits for
    `write_buffered` (one statement for every row of the table with the same columns; a
    row's later values merge into its earlier ones) and `obj` takes the values as written,
    so it is not dirtied and nothing autoflushes it; otherwise they are set on `obj` for
    the next flush."""
    if _BUFFER not in session.info:
        for name, value in values.items():
            setattr(obj, name, value)
        return
    updates: dict[type[Any], dict[Any, dict[str, Any]]] = session.info.setdefault(_UPDATES, {})
    key = type(obj).__mapper__.primary_key[0].key
    ident = getattr(obj, key)
    updates.setdefault(type(obj), {}).setdefault(ident, {key: ident}).update(values)
    for name, value in values.items():
        set_committed_value(obj, name, value)


def write_buffered(session: Session) -> int:
    """Write the buffered rows (one INSERT per table and set of columns, 1,000 rows at a
    time, in the order their tables were first buffered), then the buffered updates; how
    many rows."""
    buffer: dict[type[Any], list[Any]] | None = session.info.get(_BUFFER)
    if buffer is None:
        return 0
    written = 0
    for model, objects in buffer.items():
        rows = _fill_nulls(model, [_set_columns(model, obj) for obj in objects])
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            by_columns.setdefault(tuple(sorted(row)), []).append(row)
        for rows in by_columns.values():
            for start in range(0, len(rows), 1000):
                # render_nulls: else the ORM splits the rows by which of them are None.
                session.execute(
                    insert(model),
                    rows[start : start + 1000],
                    execution_options={"render_nulls": True},
                )
                written += len(rows[start : start + 1000])
    buffer.clear()
    return written + _write_updates(session)


def _write_updates(session: Session) -> int:
    """`UPDATE t SET ... FROM (VALUES ...) WHERE t.id = v.id`: one statement per table and
    set of columns, 1,000 rows at a time."""
    updates: dict[type[Any], dict[Any, dict[str, Any]]] = session.info.pop(_UPDATES, {})
    written = 0
    for model, by_ident in updates.items():
        table = model.__table__
        key = model.__mapper__.primary_key[0].key
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in by_ident.values():
            by_columns.setdefault(tuple(sorted(row)), []).append(row)
        for names, group in by_columns.items():
            columns = [column(n, table.c[n].type) for n in names]
            for start in range(0, len(group), 1000):
                part = group[start : start + 1000]
                given = values(*columns, name="given").data(
                    [tuple(r[n] for n in names) for r in part]
                )
                # VALUES columns are typed by their literals (text): cast to the table's.
                session.execute(
                    update(table)
                    .where(table.c[key] == cast(given.c[key], table.c[key].type))
                    .values({n: cast(given.c[n], table.c[n].type) for n in names if n != key})
                )
                written += len(part)
    return written


def _set_columns(model: type[Any], obj: Any) -> dict[str, Any]:
    """The columns set on a new object; the others get their defaults from the INSERT."""
    state = sa_inspect(obj).dict
    return {
        attr.key: state[attr.key] for attr in model.__mapper__.column_attrs if attr.key in state
    }


def _fill_nulls(model: type[Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows that leave out a column another row sets get NULL for it where NULL is what
    leaving it out gives (no default), so that they go in the same statement."""
    table = model.__table__
    named = {name for row in rows for name in row}
    plain = [
        n for n in named
        if table.c[n].default is None and table.c[n].server_default is None
    ]  # fmt: skip
    return [{**dict.fromkeys(plain), **row} for row in rows]


def draw_id(session: Session, table: str, per_draw: int = 100) -> int | None:
    """An id for a new row of `table` drawn before the row is written, so that it is written
    once, with its outcome (on PostgreSQL, from the table's sequence, `per_draw` at a time
    per transaction; ids of rolled-back work are simply not used). None on SQLite: there
    the insert assigns it."""
    if not is_postgres(session):
        return None
    pools: dict[str, list[int]] = session.info.setdefault(_ID_POOLS, {})
    pool = pools.setdefault(table, [])
    if not pool:
        drawn = session.scalars(
            text(
                f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) "
                "FROM generate_series(1, :n)"
            ),
            {"n": per_draw},
        )
        pool.extend(sorted((int(i) for i in drawn), reverse=True))
    return pool.pop()


_ID_POOLS = "gov_pipeline.id_pools"
_UPDATES = "gov_pipeline.row_updates"
