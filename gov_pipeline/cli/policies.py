"""`gov-pipeline policies ...`: create, update, move, delete, show, list."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import click

from gov_pipeline.cli.context import (
    AppContext,
    actor_option,
    json_option,
    parse_assignments,
    pass_app,
    tenant_option,
)
from gov_pipeline.cli.output import emit_json, emit_record, emit_table
from gov_pipeline.services import policies as svc

LIST_COLUMNS = ["id", "title", "policy_type", "status", "owner_id", "next_review_date"]


@click.group()
def policies() -> None:
    """Policies: every write is captured as a change by the database itself."""


@policies.command("create")
@tenant_option
@actor_option
@click.option("--title", required=True, help="Title.")
@click.option(
    "--type", "policy_type", required=True, help='Policy type, e.g. "Information Security".'
)
@click.option("--owner", "owner_id", help="Owner user id.")
@click.option("--content", help="Body text.")
@click.option(
    "--status",
    help="Only draft: a policy starts there and moves with set-status; to load policies "
    "in another status use `policies import`.",
)
@click.option("--set", "assignments", multiple=True, metavar="FIELD=VALUE", help="Any other field.")
@click.option("--json", "as_json", is_flag=True, help="Print the created policy as JSON.")
@pass_app
def create(
    app: AppContext,
    tenant: str | None,
    actor: str | None,
    title: str,
    policy_type: str,
    owner_id: str | None,
    content: str | None,
    status: str | None,
    assignments: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a policy.

    \b
    Examples:
      gov-pipeline policies create -t acme --title "Access control" --type Security
      gov-pipeline policies create -t acme --title X --type Privacy \\
        --set next_review_date=2027-01-31
    """
    fields: dict[str, Any] = parse_assignments(assignments)
    fields.update(title=title, policy_type=policy_type)
    for key, value in (("owner_id", owner_id), ("content", content), ("status", status)):
        if value is not None:
            fields[key] = value
    with app.transaction(app.tenant(tenant)) as session:
        policy = svc.create_policy(
            session,
            tenant_id=app.tenant(tenant),
            fields=fields,
            actor=svc.Actor(app.actor(actor)),
        )
        data = svc.policy_to_dict(policy, include_content=False)
    if as_json:
        emit_json(data)
    else:
        click.echo(f"created policy {data['id']} ({data['status']}): {data['title']}")


@policies.command("update")
@click.argument("policy_id")
@tenant_option
@actor_option
@click.option(
    "--set", "assignments", multiple=True, required=True, metavar="FIELD=VALUE", help="A field."
)
@pass_app
def update(
    app: AppContext,
    policy_id: str,
    tenant: str | None,
    actor: str | None,
    assignments: tuple[str, ...],
) -> None:
    """Change fields of a policy (values are JSON when they parse as JSON).

    \b
    Examples:
      gov-pipeline policies update 12 --tenant acme --set title="Access control v2"
      gov-pipeline policies update 12 -t acme --set 'tags=["iso27001"]' --set owner_id=dave
    """
    with app.transaction(app.tenant(tenant)) as session:
        policy = svc.update_policy(
            session,
            tenant_id=app.tenant(tenant),
            policy_id=policy_id,
            fields=parse_assignments(assignments),
            actor=svc.Actor(app.actor(actor)),
        )
        click.echo(f"updated policy {policy.id}")


@policies.command("set-status")
@click.argument("policy_id")
@click.argument("status")
@tenant_option
@actor_option
@pass_app
def set_status(
    app: AppContext, policy_id: str, status: str, tenant: str | None, actor: str | None
) -> None:
    """Move a policy through its lifecycle (illegal moves are refused).

    \b
    Lifecycle: draft -> in_review | archived; in_review -> approved | draft | archived;
    approved -> published | in_review | archived; published -> in_review | archived.
    \b
    Example:
      gov-pipeline policies set-status 12 in_review --tenant acme --actor alice
    """
    with app.transaction(app.tenant(tenant)) as session:
        policy = svc.get_policy(session, tenant_id=app.tenant(tenant), policy_id=policy_id)
        before = policy.status
        svc.transition_status(
            session,
            tenant_id=app.tenant(tenant),
            policy_id=policy_id,
            to_status=status,
            actor=svc.Actor(app.actor(actor)),
        )
        click.echo(f"policy {policy.id}: {before} -> {policy.status}")


@policies.command("delete")
@click.argument("policy_id")
@tenant_option
@actor_option
@pass_app
def delete(app: AppContext, policy_id: str, tenant: str | None, actor: str | None) -> None:
    """Soft-delete a policy (kept, hidden from lists, captured as a change).

    \b
    Example:
      gov-pipeline policies delete 12 --tenant acme
    """
    with app.transaction(app.tenant(tenant)) as session:
        policy = svc.soft_delete_policy(
            session,
            tenant_id=app.tenant(tenant),
            policy_id=policy_id,
            actor=svc.Actor(app.actor(actor)),
        )
        click.echo(f"deleted policy {policy.id}")


@policies.command("show")
@click.argument("policy_id")
@tenant_option
@json_option
@click.option("--deleted", is_flag=True, help="Also show a soft-deleted policy.")
@pass_app
def show(app: AppContext, policy_id: str, tenant: str | None, as_json: bool, deleted: bool) -> None:
    """Show one policy.

    \b
    Example:
      gov-pipeline policies show 12 --tenant acme --json
    """
    with app.transaction(app.tenant(tenant)) as session:
        policy = svc.get_policy(
            session, tenant_id=app.tenant(tenant), policy_id=policy_id, include_deleted=deleted
        )
        data = svc.policy_to_dict(policy)
    if as_json:
        emit_json(data)
    else:
        emit_record(data)


@policies.command("list")
@tenant_option
@click.option("--status", help="Only this status.")
@click.option("--type", "policy_type", help="Only this policy type.")
@click.option("--owner", "owner_id", help="Only this owner.")
@click.option("--limit", default=50, show_default=True, type=int, help="Page size (1-1000).")
@click.option("--offset", default=0, show_default=True, type=int, help="Rows to skip.")
@json_option
@pass_app
def list_(
    app: AppContext,
    tenant: str | None,
    status: str | None,
    policy_type: str | None,
    owner_id: str | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List a tenant's policies, with filters and paging.

    \b
    Examples:
      gov-pipeline policies list --tenant acme --status draft
      gov-pipeline policies list -t acme --type Privacy --limit 20 --offset 20 --json
    """
    with app.transaction(app.tenant(tenant)) as session:
        page = svc.list_policies(
            session,
            tenant_id=app.tenant(tenant),
            status=status,
            policy_type=policy_type,
            owner_id=owner_id,
            limit=limit,
            offset=offset,
        )
        rows = [svc.policy_to_dict(p, include_content=False) for p in page.items]
    if as_json:
        emit_json({"total": page.total, "limit": limit, "offset": offset, "items": rows})
        return
    emit_table(rows, LIST_COLUMNS, empty="no policies match")
    if rows:
        click.echo(f"({offset + 1}-{offset + len(rows)} of {page.total})")


@policies.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@tenant_option
@actor_option
@click.option("--chunk-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), help="Default: by suffix.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@pass_app
def import_(
    app: AppContext,
    file: Path,
    tenant: str | None,
    actor: str | None,
    chunk_size: int,
    fmt: str | None,
    quiet: bool,
) -> None:
    """Create policies from a CSV or JSON file: every row checked first, then written in
    chunks (all or nothing per file on bad rows), each insert captured as a change.

    \b
    Examples:
      gov-pipeline policies import policies.csv --tenant acme
      gov-pipeline policies import export.json -t acme --chunk-size 1000
    """
    from gov_pipeline.runners import importer

    rows = importer.read_import_file(file, fmt)
    with click.progressbar(
        length=len(rows),
        label=f"importing {len(rows)} policies",
        file=io.StringIO() if quiet else None,
    ) as bar:
        last = 0

        def progress(done: int, total: int) -> None:
            nonlocal last
            bar.update(done - last)
            last = done

        report = importer.import_policies(
            app.sessions, tenant_id=app.tenant(tenant), rows=rows, chunk_size=chunk_size,
            actor=app.actor(actor), on_progress=progress,
        )  # fmt: skip
    click.echo(
        f"imported {report.created} policies (ids {report.first_id}-{report.last_id}) "
        f"in {report.chunks} chunk(s), {report.seconds:.2f}s"
    )
