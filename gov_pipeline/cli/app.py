"""Root command, shared options, and the error contract: 0 ok, 1 failure, 2 usage.

Every error is one line on stderr; `--debug` adds the traceback.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from gov_pipeline.config import Settings, load_settings, mask_url_password
from gov_pipeline.db.engine import engine_for, make_sessionmaker, scope_to_tenant
from gov_pipeline.db.integrity import ALL_TENANTS
from gov_pipeline.domain.errors import (
    ConfigurationError,
    GovPipelineError,
    InvalidInputError,
    SchemaMissingError,
)

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
            self._factory = make_sessionmaker(self.engine, tenant=ALL_TENANTS)
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


pass_app = click.make_pass_decorator(AppContext)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """gov-pipeline: automate what happens when a policy changes.

    \b
    Examples:
      gov-pipeline db upgrade
      gov-pipeline tenants create acme --name "Acme Corp"
      gov-pipeline policies create --tenant acme --title "Access control" --type Security
      gov-pipeline policies list --tenant acme --status draft --json
    """
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = AppContext(settings=load_settings(), debug=debug)
    ctx.obj = app
    ctx.call_on_close(app.close)


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
    import json

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


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `gov-pipeline` console script."""
    # Importing the command modules registers them on `cli`.
    from gov_pipeline.cli import db as _db  # noqa: F401
    from gov_pipeline.cli import executions as _executions  # noqa: F401
    from gov_pipeline.cli import policies as _policies  # noqa: F401
    from gov_pipeline.cli import process as _process  # noqa: F401
    from gov_pipeline.cli import queue as _queue  # noqa: F401
    from gov_pipeline.cli import tenants as _tenants  # noqa: F401
    from gov_pipeline.cli import verify as _verify  # noqa: F401
    from gov_pipeline.cli import workflows as _workflows  # noqa: F401

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="gov-pipeline", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx else ""
        click.echo(f"error: {_one_line(exc.format_message())}{hint}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(EXIT_FAILURE)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (InvalidInputError, ConfigurationError) as exc:
        _report(exc, debug)
        sys.exit(EXIT_USAGE)
    except GovPipelineError as exc:
        _report(exc, debug)
        sys.exit(EXIT_FAILURE)
    except OperationalError as exc:
        _report(exc, debug, prefix="database unavailable: ", text=str(exc.orig))
        sys.exit(EXIT_FAILURE)
    except SQLAlchemyError as exc:
        _report(exc, debug, prefix="database error: ")
        sys.exit(EXIT_FAILURE)
    except Exception as exc:  # the last line of defence: still one line, still exit 1
        _report(exc, debug, prefix=f"unexpected {type(exc).__name__}: ")
        sys.exit(EXIT_FAILURE)


def _report(exc: BaseException, debug: bool, prefix: str = "", text: str | None = None) -> None:
    if debug:
        traceback.print_exception(exc)
    click.echo(f"error: {prefix}{_one_line(text if text is not None else str(exc))}", err=True)
