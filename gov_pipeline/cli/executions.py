"""`gov-pipeline executions|approvals|notifications|tasks ...`."""

from __future__ import annotations

import json

import click

from gov_pipeline.cli.context import (
    AppContext,
    actor_option,
    json_option,
    pass_app,
    tenant_option,
)
from gov_pipeline.cli.output import emit_json, emit_record, emit_table
from gov_pipeline.domain.entities import kind_of
from gov_pipeline.domain.errors import ExecutionsFailedError, InvalidInputError
from gov_pipeline.domain.statuses import EntityType, ExecutionStatus
from gov_pipeline.runners.retries import retry_now
from gov_pipeline.services import approvals as approval_svc
from gov_pipeline.services import executions as svc
from gov_pipeline.services import notifications as notification_svc


@click.group()
def executions() -> None:
    """Workflow executions: what ran, why, retrying failures, and cancelling."""


@executions.command("list")
@tenant_option
@click.option("--status", help="Only this status (e.g. failed, awaiting_approval).")
@click.option("--workflow", help="Only this workflow (by name).")
@click.option("--policy", "policy_id", help="Only those about this policy.")
@click.option("--entity", help="Only those about this record, as TYPE:ID (risk:4).")
@click.option("--limit", default=50, show_default=True, type=int)
@json_option
@pass_app
def list_(
    app: AppContext,
    tenant: str | None,
    status: str | None,
    workflow: str | None,
    policy_id: str | None,
    entity: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List executions, newest first.

    \b
    Examples:
      gov-pipeline executions list --tenant acme --status failed
      gov-pipeline executions list -t acme --policy 3 --json
      gov-pipeline executions list -t acme --entity risk:4
    """
    about = _entity_filter(policy_id, entity)
    with app.transaction(app.tenant(tenant)) as session:
        rows = svc.list_executions(
            session, app.tenant(tenant), status=status, workflow=workflow, entity=about,
            limit=limit,
        )  # fmt: skip
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        row["entity"] = f"{row['entity_type']}:{row['entity_id']}"
        # A cancelled execution keeps the error it may have failed with; why it ended is
        # the cancellation.
        cancelled = row["status"] == ExecutionStatus.CANCELLED
        row["why"] = row["status_reason"] if cancelled else row["error"] or row["status_reason"]
    columns = ["id", "workflow", "entity", "change_id", "status", "attempts", "why"]
    emit_table(rows, columns, empty="no executions", wrap=["why"])


def _entity_filter(policy_id: str | None, entity: str | None) -> tuple[str, str] | None:
    if policy_id is not None and entity is not None:
        raise InvalidInputError("--entity", "give --policy or --entity, not both")
    if policy_id is not None:
        return (EntityType.POLICY, policy_id)
    if entity is None:
        return None
    entity_type, sep, entity_id = entity.partition(":")
    if not sep or not entity_id:
        raise InvalidInputError("--entity", f"expected TYPE:ID (risk:4), got {entity[:60]!r}")
    return (kind_of(entity_type).entity_type, entity_id)


@executions.command("show")
@click.argument("execution_id")
@tenant_option
@json_option
@pass_app
def show(app: AppContext, execution_id: str, tenant: str | None, as_json: bool) -> None:
    """Show one execution with its action runs, approvals, tasks and deliveries.

    \b
    Example:
      gov-pipeline executions show 12 --tenant acme
    """
    with app.transaction(app.tenant(tenant)) as session:
        data = svc.describe_execution(session, app.tenant(tenant), execution_id)
    if as_json:
        emit_json(data)
        return
    nested = {
        k: data.pop(k)
        for k in ("action_runs", "approvals", "tasks", "webhook_deliveries", "email_deliveries")
    }
    data.pop("input", None)
    emit_record(data)
    for run in nested["action_runs"]:
        why = run["error"] or json.dumps(run["result"], default=str)[:100]
        click.echo(
            f"  step {run['step_key']:<24} {run['action_type']:<18} {run['status']:<10} {why}"
        )
    for step in nested["approvals"]:
        who = step["decided_by"] or ",".join(step["approver_users"] + step["approver_roles"])
        click.echo(
            f"  approval {step['id']} step {step['step_index'] + 1}: {step['status']} ({who})"
        )
    for delivery in nested["webhook_deliveries"]:
        click.echo(
            f"  webhook {delivery['id']} {delivery['url']}: {delivery['status']}"
            f" after {delivery['attempts']} attempt(s) {delivery['last_error'] or ''}"
        )
    for email in nested["email_deliveries"]:
        click.echo(
            f"  email {email['id']} to {email['user_id']} <{email['to_address']}>: "
            f"{email['status']} after {email['attempts']} attempt(s) {email['last_error'] or ''}"
        )


@executions.command("retry")
@click.argument("execution_id")
@tenant_option
@pass_app
def retry(app: AppContext, execution_id: str, tenant: str | None) -> None:
    """Run a failed execution again (or resend its failed webhook deliveries).

    Exits 1, with the reason, when the execution failed again.

    \b
    Example:
      gov-pipeline executions retry 12 --tenant acme
    """
    with app.transaction(app.tenant(tenant)) as session:
        what = svc.retry_execution(session, app.tenant(tenant), execution_id)
        eid = svc.get_execution(session, app.tenant(tenant), execution_id).id
    retry_now(app.sessions, app.settings, eid, what)
    with app.transaction(app.tenant(tenant)) as session:
        execution = svc.get_execution(session, app.tenant(tenant), eid)
        status, why = execution.status, execution.error or execution.status_reason
    click.echo(f"execution {eid}: retried ({what}), now {status}")
    if status == ExecutionStatus.FAILED:
        raise ExecutionsFailedError(f"execution {eid} failed again: {why}", [eid])


@executions.command("cancel")
@click.argument("execution_id")
@tenant_option
@actor_option
@click.option("--reason", help="Why it is cancelled; kept with the execution.")
@pass_app
def cancel(
    app: AppContext, execution_id: str, tenant: str | None, actor: str | None, reason: str | None
) -> None:
    """Cancel a pending, waiting or failed execution: it ends cancelled, its open approval
    steps are withdrawn, its unsent webhooks are not sent, and nothing more runs for it.

    \b
    Example:
      gov-pipeline executions cancel 12 --tenant acme --actor carol --reason "superseded"
    """
    with app.transaction(app.tenant(tenant)) as session:
        done = svc.cancel_execution(
            session, tenant_id=app.tenant(tenant), execution_id=execution_id,
            actor=app.actor(actor), reason=reason,
        )  # fmt: skip
    parts = [f"execution {done.execution_id}: cancelled (was {done.previous_status})"]
    if done.withdrawn_approvals:
        parts.append("withdrew approval " + ", ".join(map(str, done.withdrawn_approvals)))
    if done.cancelled_deliveries:
        parts.append(f"{len(done.cancelled_deliveries)} webhook delivery(ies) not sent")
    click.echo("; ".join(parts))


@click.group()
def approvals() -> None:
    """Approval steps: list what waits for you, and decide."""


@approvals.command("list")
@tenant_option
@click.option("--user", help="Only the open steps this user may decide.")
@click.option("--status", help="Only this status (pending, waiting, approved, ...).")
@json_option
@pass_app
def list_approvals(
    app: AppContext, tenant: str | None, user: str | None, status: str | None, as_json: bool
) -> None:
    """List approval steps.

    \b
    Example:
      gov-pipeline approvals list --tenant acme --user carol
    """
    with app.transaction(app.tenant(tenant)) as session:
        rows = [
            {
                "id": a.id, "execution_id": a.execution_id, "entity_type": a.entity_type,
                "entity_id": a.entity_id, "entity": f"{a.entity_type}:{a.entity_id}",
                "step": a.step_index + 1, "name": a.name, "status": a.status,
                "approvers": a.approver_users + a.approver_roles, "due_at": a.due_at,
                "decided_by": a.decided_by, "quorum": a.quorum,
                "delegated_to": [d["to"] for d in a.delegations],
            }
            for a in approval_svc.list_approvals(
                session, app.tenant(tenant), user_id=user, status=status
            )
        ]  # fmt: skip
    if as_json:
        emit_json(rows)
    else:
        columns = ["id", "entity", "step", "name", "status", "approvers", "due_at", "decided_by"]
        emit_table(rows, columns, empty="no approvals")


def _decision_command(name: str, decision: str, summary: str) -> None:
    @approvals.command(name, help=summary)
    @click.argument("approval_id")
    @tenant_option
    @click.option("--user", required=True, help="The approver deciding.")
    @click.option("--comment", help="A comment kept with the decision.")
    @click.option("--signature", help='JSON, e.g. \'{"type": "typed", "data": "Carol Smith"}\'.')
    @pass_app
    def command(
        app: AppContext,
        approval_id: str,
        tenant: str | None,
        user: str,
        comment: str | None,
        signature: str | None,
    ) -> None:
        try:
            signed = json.loads(signature) if signature else None
        except ValueError:
            raise InvalidInputError("--signature", "must be JSON") from None
        if signed is not None and not isinstance(signed, dict):
            raise InvalidInputError("--signature", "must be a JSON object")
        with app.transaction(app.tenant(tenant)) as session:
            change = approval_svc.decide(
                session, tenant_id=app.tenant(tenant), approval_id=approval_id, user_id=user,
                decision=decision, comment=comment, signature=signed,
            )  # fmt: skip
            click.echo(
                f"approval {approval_id}: {decision} by {user} (change {change.id};"
                " the flow continues when it is processed)"
            )


_EXAMPLE = (
    "\n\n\b\nExample:\n  gov-pipeline approvals {cmd} 4 --tenant acme --user carol --comment ok"
)
_decision_command("approve", "approve", "Approve an open step." + _EXAMPLE.format(cmd="approve"))
_decision_command(
    "reject", "reject", "Reject an open step; the flow ends." + _EXAMPLE.format(cmd="reject")
)
_decision_command(
    "request-changes",
    "request_changes",
    "Ask for changes: the policy goes back to draft." + _EXAMPLE.format(cmd="request-changes"),
)


@approvals.command("delegate")
@click.argument("approval_id")
@tenant_option
@click.option("--user", required=True, help="The approver handing the step on.")
@click.option("--to", "to_user", required=True, help="The user of the tenant taking it over.")
@click.option("--comment", help="Why, kept with the delegation.")
@pass_app
def delegate(
    app: AppContext,
    approval_id: str,
    tenant: str | None,
    user: str,
    to_user: str,
    comment: str | None,
) -> None:
    """Hand an open step to another user of the tenant (where its definition allows it:
    allow_delegation: true). The delegate may decide it; you no longer may.

    \b
    Example:
      gov-pipeline approvals delegate 4 --tenant acme --user carol --to dan --comment "on leave"
    """
    with app.transaction(app.tenant(tenant)) as session:
        approval_svc.delegate(
            session, tenant_id=app.tenant(tenant), approval_id=approval_id, user_id=user,
            to_user=to_user, comment=comment,
        )  # fmt: skip
    click.echo(f"approval {approval_id}: delegated by {user} to {to_user}")


@click.group()
def notifications() -> None:
    """In-app notifications, and their emails."""


@notifications.command("list")
@tenant_option
@click.option("--user", help="Only this recipient.")
@click.option("--limit", default=100, show_default=True, type=int)
@json_option
@pass_app
def list_notifications(
    app: AppContext, tenant: str | None, user: str | None, limit: int, as_json: bool
) -> None:
    """List notifications, newest first.

    \b
    Example:
      gov-pipeline notifications list --tenant acme --user olivia
    """
    with app.transaction(app.tenant(tenant)) as session:
        rows = [
            {
                "id": n.id, "user": n.user_id, "type": n.type, "priority": n.priority,
                "title": n.title, "policy": n.entity_id, "created_at": n.created_at,
            }
            for n in notification_svc.list_notifications(session, app.tenant(tenant), user, limit)
        ]  # fmt: skip
    if as_json:
        emit_json(rows)
    else:
        columns = ["id", "user", "type", "priority", "title", "policy"]
        emit_table(rows, columns, empty="no notifications")
