"""Engine and session factory; the caller of `session_scope` owns the transaction.

On PostgreSQL an engine made with a `role` runs as that role (`SET ROLE` on connect), and
every transaction of a session says which tenant it works in (`gov.tenant_id`, read by the
row-level security policies, see db/integrity.py): the tenant its sessionmaker was made
for, or all tenants (`ALL_TENANTS`) for cross-tenant work, narrowed by `scope_to_tenant`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from gov_pipeline.config import Settings, normalize_database_url
from gov_pipeline.db.integrity import TENANT_SETTING
from gov_pipeline.domain.errors import ConfigurationError

# In a pooled connection's info: the role row-level security applies to was set.
_RLS_ROLE = "gov_rls_role"
# In a session's info: the tenant its transactions work in.
_TENANT = "gov_tenant"
# In a session's info: the process sends email (SMTP configured), so notifications written
# through the session queue an email too (services/emails.py).
_QUEUE_EMAILS = "gov_queue_emails"


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (below) instead of the driver.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _on_sqlite_begin(conn: Any) -> None:
    # Take the write lock up front: a transaction that read first and wrote later would
    # fail with SQLITE_BUSY_SNAPSHOT when another writer committed in between, instead of
    # waiting its turn. SQLite has one writer at a time anyway.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, echo: bool = False, role: str | None = None) -> Engine:
    """Create an engine for `url` (SQLite file directories are created as needed).

    Args:
        role: PostgreSQL only: `SET ROLE` to it on every new connection (row-level security
            then applies, see db/integrity.py). None: connect as the URL's user.

    Raises:
        ConfigurationError: (on first connect) the URL's user may not take `role`.
    """
    url = normalize_database_url(url)
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=10)
    engine = create_engine(url, **kwargs)
    if role:
        event.listen(engine, "connect", _set_role(role, parsed.username))
    return engine


def _set_role(role: str, user: str | None) -> Any:
    def on_connect(dbapi_conn: Any, record: Any) -> None:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f'SET ROLE "{role}"')
        except Exception as exc:
            dbapi_conn.rollback()
            raise ConfigurationError(
                f"cannot SET ROLE {role} as {user!r} ({' '.join(str(exc).split())}): run "
                "`gov-pipeline db upgrade`, grant the role to this user (docs/operations.md, "
                "Row-level security), or set GOV_PIPELINE_DB_ROLE= to connect as the user"
            ) from None
        finally:
            cursor.close()
        dbapi_conn.commit()
        record.info[_RLS_ROLE] = role

    return on_connect


def engine_for(settings: Settings) -> Engine:
    """The application's engine: its database, SQL logging and row-level security role."""
    return make_engine(settings.database_url, echo=settings.log_sql, role=settings.db_role)


def make_sessionmaker(
    engine: Engine, *, tenant: str, queue_emails: bool = False
) -> sessionmaker[Session]:
    """Sessions whose transactions work in `tenant` (`ALL_TENANTS` of db/integrity.py for
    cross-tenant work:
    the change reader, the engine's batches, the sweeper, verify).

    Args:
        queue_emails: the process has SMTP settings (`Settings.smtp`): every notification
            written through these sessions also queues its email, in the same transaction.
    """
    info = {_TENANT: tenant, _QUEUE_EMAILS: queue_emails}
    return sessionmaker(bind=engine, expire_on_commit=False, info=info)


@event.listens_for(Session, "after_begin")
def _declare_tenant(session: Session, _tx: SessionTransaction, connection: Connection) -> None:
    tenant = session.info.get(_TENANT)
    if tenant is not None and connection.info.get(_RLS_ROLE):
        _set_tenant(connection, tenant)


def _set_tenant(connection: Connection, tenant: str) -> None:
    connection.execute(
        text(f"SELECT set_config('{TENANT_SETTING}', :tenant, true)"), {"tenant": tenant}
    )


def scope_to_tenant(session: Session, tenant: str) -> None:
    """Narrow the rest of the session's current transaction to `tenant` (row-level
    security: rows of other tenants are neither seen nor written)."""
    connection = session.connection()
    if connection.info.get(_RLS_ROLE):
        _set_tenant(connection, tenant)


def tenant_of(session: Session) -> str | None:
    """The tenant the session's sessionmaker was made for (`ALL_TENANTS` for all)."""
    value = session.info.get(_TENANT)
    return None if value is None else str(value)


def queues_emails(session: Session) -> bool:
    """Whether notifications written through `session` queue an email (see make_sessionmaker)."""
    return bool(session.info.get(_QUEUE_EMAILS))


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
