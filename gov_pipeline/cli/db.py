"""`gov-pipeline db ...`: schema migrations."""

from __future__ import annotations

import click

from gov_pipeline.cli.context import AppContext, pass_app, sqlite_file
from gov_pipeline.db import migrate
from gov_pipeline.domain.errors import GovPipelineError


@click.group()
def db() -> None:
    """Database schema: migrations with Alembic (PostgreSQL and SQLite)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@pass_app
def upgrade(app: AppContext, revision: str) -> None:
    """Create or migrate the schema, change capture triggers included.

    \b
    Example:
      GOV_PIPELINE_DATABASE_URL=postgresql://user@host/db gov-pipeline db upgrade
    """
    from alembic.util import CommandError

    try:
        migrate.upgrade(app.settings.database_url, revision)
    except CommandError as exc:  # e.g. an unknown revision: a failure, not a crash
        raise GovPipelineError(f"migration failed: {exc}") from exc
    current = migrate.current_revision(app.settings.database_url)
    click.echo(f"database at revision {current}")


@db.command("current")
@pass_app
def current(app: AppContext) -> None:
    """Show the schema revision of the database and the newest one known.

    \b
    Example:
      gov-pipeline db current
    """
    path = sqlite_file(app.settings.database_url)
    if path is not None and not path.is_file():  # looking must not create it
        click.echo(f"current: none (database {path} does not exist; run: gov-pipeline db upgrade)")
    else:
        rev = migrate.current_revision(app.settings.database_url)
        click.echo(f"current: {rev or 'none (run: gov-pipeline db upgrade)'}")
    click.echo(f"head:    {migrate.head_revision()}")
