"""The root command, the commands it holds, and `main`: the error contract of
`context.py` applied (0 ok, 1 failure, 2 usage), every error one line on stderr.
"""

from __future__ import annotations

import logging
import sys
import traceback

import click
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from gov_pipeline.cli.audit import audit
from gov_pipeline.cli.context import EXIT_FAILURE, EXIT_USAGE, AppContext
from gov_pipeline.cli.db import db
from gov_pipeline.cli.emails import EMAIL_COMMANDS
from gov_pipeline.cli.executions import approvals, executions, notifications
from gov_pipeline.cli.process import process
from gov_pipeline.cli.queue import queue, worker
from gov_pipeline.cli.records import GROUPS
from gov_pipeline.cli.report import report
from gov_pipeline.cli.tenants import tenants, users
from gov_pipeline.cli.verify import verify_command
from gov_pipeline.cli.workflows import workflows
from gov_pipeline.config import load_settings
from gov_pipeline.domain.errors import ConfigurationError, GovPipelineError, InvalidInputError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """gov-pipeline: automate what happens when a governed record changes.

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


for _command in (
    approvals, audit, db, executions, notifications, process, queue, report, tenants, users,
    verify_command, worker, workflows, *GROUPS.values(),
):  # fmt: skip
    cli.add_command(_command)
for _command in EMAIL_COMMANDS:
    notifications.add_command(_command)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `gov-pipeline` console script."""
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
