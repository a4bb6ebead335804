"""What every command shares: the application context (settings, engine, transactions),
the common options, `parse_assignments`, the Dagster instance, and the error contract.

The error contract: a command returns (exit 0) or raises. `InvalidInputError` and
`ConfigurationError` are usage errors (exit 2); any other `GovPipelineError`, a database
error or anything unexpected is a failure (exit 1). `app.main` turns each into one line on
stderr (`--debug` adds the traceback) and the exit code.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from gov_pipeline.config import Settings, mask_url_password
from gov_pipeline.db.engine import engine_for, make_sessionmaker, scope_to_tenant
from gov_pipeline.db.integrity import ALL_TENANTS
from gov_pipeline.domain.errors import ConfigurationError, InvalidInputError, SchemaMissingError

if TYPE_CHECKING:
    from dagster import DagsterInstance

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


@dataclass
class AppContext:
    """What every command gets: settings, and a lazily created engine."""

    settings: Settings
    debug: bool = False
    _engine: Engine | None = field(default=None, repr=False)
    _factory: sessionmaker[Session] | None = field(default=None, repr=False)

    @property
    def engine(self) -> Engine:
        """The application database's engine; the first use checks it holds the schema.

        Raises:
            SchemaMissingError: the database does not exist or has no schema.
        """
        if self._engine is None:
            self._engine = open_migrated_engine(self.settings)
        return self._engine

    @property
    def sessions(self) -> sessionmaker[Session]:
        if self._factory is None:
            self._factory = make_sessionmaker(
                self.engine, tenant=ALL_TENANTS, queue_emails=self.settings.smtp is not None
            )
        return self._factory

    @contextmanager
    def transaction(self, tenant: str | None = None) -> Iterator[Session]:
        """One transaction for one command: all of it commits, or none of it.

        Args:
            tenant: the tenant the command works in; on PostgreSQL the transaction then
                sees and writes only that tenant's rows (row-level security). None: all
                tenants (commands that span them: tenants list, verify, workflows apply).
        """
        with self.sessions.begin() as session:
            if tenant is not None:
                scope_to_tenant(session, tenant)
            yield session

    def tenant(self, given: str | None) -> str:
        """The tenant named by `--tenant`, else GOV_PIPELINE_TENANT.

        Raises:
            InvalidInputError: neither is set.
        """
        tenant = given or self.settings.default_tenant
        if not tenant:
            raise InvalidInputError("tenant", "is required (--tenant or GOV_PIPELINE_TENANT)")
        return tenant

    def actor(self, given: str | None) -> str:
        return given or self.settings.default_actor or "cli"

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


pass_app = click.make_pass_decorator(AppContext)


def sqlite_file(url: str) -> Path | None:
    """The absolute path of the file a SQLite `url` names; None for other databases, an
    in-memory one or a `uri=true` URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.query.get("uri") == "true":
        return None
    return Path(parsed.database).absolute()


def open_migrated_engine(settings: Settings) -> Engine:
    """An engine on the application database, once it is known to hold the schema.

    Checked once per engine (so once per command), never per transaction. Nothing is
    created: a missing SQLite file stays missing, as only `gov-pipeline db upgrade` creates
    the database (and the folder of its file).

    Raises:
        SchemaMissingError: no such SQLite file, or a database at no Alembic revision.
        OperationalError: the database cannot be reached.
    """
    url = settings.database_url
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise SchemaMissingError(str(path), "does not exist")
    engine = engine_for(settings)
    # A SQLite file is looked at read-only: the engine's first connection would turn an
    # empty or unrelated file into a WAL database. Elsewhere the engine's own connection
    # is used, and then serves the command's first transaction.
    probe = engine if path is None else _read_only_sqlite(path)
    try:
        with probe.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
    except BaseException:
        engine.dispose()
        raise
    finally:
        if probe is not engine:
            probe.dispose()
    if revision is None:
        engine.dispose()
        raise SchemaMissingError(str(path or mask_url_password(url)), "has no schema")
    return engine


def _read_only_sqlite(path: Path) -> Engine:
    return create_engine(
        "sqlite://",
        creator=lambda: sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True),
        poolclass=NullPool,
    )


def dagster_instance() -> DagsterInstance:
    """The Dagster instance of $DAGSTER_HOME.

    Raises:
        ConfigurationError: it cannot be opened (no DAGSTER_HOME, a bad dagster.yaml, ...).
    """
    from dagster import DagsterInstance

    try:
        return DagsterInstance.get()
    except Exception as exc:  # Dagster raises its own error types for a missing or bad home
        raise ConfigurationError(f"cannot open the Dagster instance: {exc}") from exc


tenant_option = click.option(
    "--tenant", "-t", metavar="TENANT", help="Tenant id (default: $GOV_PIPELINE_TENANT)."
)
actor_option = click.option(
    "--actor", metavar="USER", help="Who makes the change (default: $GOV_PIPELINE_ACTOR or cli)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def parse_assignments(pairs: tuple[str, ...], option: str = "--set") -> dict[str, Any]:
    """`key=value` pairs to a dict; values that parse as JSON are taken as JSON.

    Raises:
        InvalidInputError: a pair without `=`.
    """
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(option, f"expected KEY=VALUE, got {pair[:60]!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        result[key.strip()] = value
    return result
