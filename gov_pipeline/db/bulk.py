"""Bulk writes that skip rows hitting a unique key, for both databases."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

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
