"""`gov-pipeline tenants|users ...`."""

from __future__ import annotations

import click

from gov_pipeline.cli.context import AppContext, json_option, pass_app, tenant_option
from gov_pipeline.cli.output import emit_json, emit_table
from gov_pipeline.services import tenants as svc


@click.group()
def tenants() -> None:
    """Tenants: every row belongs to one."""


@tenants.command("create")
@click.argument("tenant_id")
@click.option("--name", help="Display name (default: the id).")
@pass_app
def create(app: AppContext, tenant_id: str, name: str | None) -> None:
    """Create a tenant (does nothing if it exists).

    \b
    Example:
      gov-pipeline tenants create acme --name "Acme Corp"
    """
    with app.transaction() as session:
        tenant = svc.create_tenant(session, tenant_id=tenant_id, name=name)
        click.echo(f"tenant {tenant.tenant_id} ({tenant.name})")


@tenants.command("list")
@json_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List tenants.

    \b
    Example:
      gov-pipeline tenants list --json
    """
    with app.transaction() as session:
        rows = [{"tenant_id": t.tenant_id, "name": t.name} for t in svc.list_tenants(session)]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["tenant_id", "name"], empty="no tenants")


@click.group()
def users() -> None:
    """Users and their roles (approvers and notification recipients)."""


@users.command("create")
@click.argument("user_id")
@tenant_option
@click.option("--name", help="Display name.")
@click.option("--email", help="E-mail address.")
@click.option(
    "--role", "roles", multiple=True, help="A role (repeatable), e.g. compliance_officer."
)
@pass_app
def create_user(
    app: AppContext,
    user_id: str,
    tenant: str | None,
    name: str | None,
    email: str | None,
    roles: tuple[str, ...],
) -> None:
    """Create or update a user; its roles become exactly those given.

    \b
    Example:
      gov-pipeline users create carol --tenant acme --role compliance_officer
    """
    with app.transaction(app.tenant(tenant)) as session:
        user = svc.upsert_user(
            session,
            tenant_id=app.tenant(tenant),
            user_id=user_id,
            name=name,
            email=email,
            roles=roles,
        )
        click.echo(f"user {user.user_id} roles={','.join(sorted(roles)) or '-'}")


@users.command("list")
@tenant_option
@json_option
@pass_app
def list_users(app: AppContext, tenant: str | None, as_json: bool) -> None:
    """List a tenant's users with their roles.

    \b
    Example:
      gov-pipeline users list --tenant acme
    """
    with app.transaction(app.tenant(tenant)) as session:
        rows = [
            {"user_id": u.user_id, "name": u.name, "email": u.email, "roles": roles}
            for u, roles in svc.list_users(session, app.tenant(tenant))
        ]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["user_id", "name", "email", "roles"], empty="no users")
