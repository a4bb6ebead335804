"""`gov-pipeline notifications emails|resend-emails`: the email outbox for operators."""

from __future__ import annotations

import click

from gov_pipeline.cli.context import AppContext, json_option, pass_app, tenant_option
from gov_pipeline.cli.output import emit_json, emit_table
from gov_pipeline.db.models import row_to_dict
from gov_pipeline.domain.errors import TransientError
from gov_pipeline.domain.statuses import EmailStatus
from gov_pipeline.runners.emails import send_pending
from gov_pipeline.services import emails as svc


@click.command("emails")
@tenant_option
@click.option(
    "--status", type=click.Choice([s.value for s in EmailStatus]), help="Only this status."
)
@click.option("--user", help="Only this recipient.")
@click.option("--limit", default=100, show_default=True, type=int)
@json_option
@pass_app
def list_emails(
    app: AppContext,
    tenant: str | None,
    status: str | None,
    user: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List the emails of notifications, newest first: to whom, status, attempts, error.

    \b
    Examples:
      gov-pipeline notifications emails --tenant acme --status failed
      gov-pipeline notifications emails -t acme --user olivia --json
    """
    with app.transaction(app.tenant(tenant)) as session:
        rows = [
            row_to_dict(e, exclude=frozenset({"body"}))
            for e in svc.list_emails(
                session, app.tenant(tenant), status=status, user_id=user, limit=limit
            )
        ]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        row["to"] = f"{row['user_id']} <{row['to_address']}>"
    columns = ["id", "notification_id", "execution_id", "to", "subject", "status", "attempts",
               "last_error"]  # fmt: skip
    emit_table(rows, columns, empty="no emails", wrap=["last_error"])


@click.command("resend-emails")
@click.argument("email_ids", nargs=-1, type=int)
@tenant_option
@click.option("--all-failed", is_flag=True, help="Every failed email of the tenant.")
@pass_app
def resend_emails(
    app: AppContext, email_ids: tuple[int, ...], tenant: str | None, all_failed: bool
) -> None:
    """Send failed emails again, with fresh attempts, to each user's address now (fix a
    wrong address with `users create ... --email` first). Sent here at once when SMTP is
    configured in this process, else by the next deliver_emails run. Exits 1 when one fails
    again.

    \b
    Examples:
      gov-pipeline notifications resend-emails 12 13 --tenant acme
      gov-pipeline notifications resend-emails -t acme --all-failed
    """
    with app.transaction(app.tenant(tenant)) as session:
        queued = svc.resend_emails(session, app.tenant(tenant), email_ids, all_failed=all_failed)
    if not queued:
        click.echo("no failed emails to resend")
        return
    smtp = app.settings.smtp
    if smtp is None:
        click.echo(
            f"queued again: {', '.join(map(str, queued))} (GOV_PIPELINE_SMTP_HOST is not set "
            "here: the deliver_emails job sends them)"
        )
        return
    stats = send_pending(app.sessions, smtp, ids=queued)
    click.echo(f"resent {len(queued)} email(s): {stats.sent} sent, {len(stats.failed)} failed")
    if stats.failed:
        first = min(stats.failed)
        raise TransientError(f"email {first} failed again: {stats.failed[first]}")


EMAIL_COMMANDS = (list_emails, resend_emails)
