"""Engine and session factory; the caller of `session_scope` owns the transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import normalize_database_url


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Python's sqlite3 starts transactions lazily; BEGIN IMMEDIATE semantics come from
    # the busy timeout plus WAL, which lets readers run beside the single writer.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine for `url` (SQLite file directories are created as needed)."""
    url = normalize_database_url(url)
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=10)
    return create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def is_postgres(bind: Engine | Session | Any) -> bool:
    """True when `bind` (an engine, connection or session) talks to PostgreSQL."""
    if isinstance(bind, Session):
        bind = bind.get_bind()
    return bool(bind.dialect.name == "postgresql")


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    with factory.begin() as session:
        yield session
