"""`gov-pipeline workflows ...`: validate, apply, list, dry-run definition files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gov_pipeline.cli.context import AppContext, actor_option, json_option, pass_app, tenant_option
from gov_pipeline.cli.output import emit_json, emit_table
from gov_pipeline.domain.definitions import WorkflowDefinition, load_definition_file
from gov_pipeline.domain.errors import DefinitionError, GovPipelineError
from gov_pipeline.engine import dry_run as preview
from gov_pipeline.services import workflows as svc

FILES = click.argument(
    "files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)


@click.group()
def workflows() -> None:
    """Workflow definitions (YAML or JSON files): validate, apply as versions, dry-run."""


def _load_all(files: tuple[Path, ...]) -> list[WorkflowDefinition]:
    """Every definition of every file, or one DefinitionError listing every issue of all."""
    definitions: list[WorkflowDefinition] = []
    errors: list[DefinitionError] = []
    for path in files:
        try:
            definitions += load_definition_file(path)
        except DefinitionError as exc:
            errors.append(exc)
    if errors:
        for failure in errors:
            for issue in failure.issues:
                click.echo(f"{failure.source}: {issue}", err=True)
        count = sum(len(e.issues) for e in errors)
        raise GovPipelineError(f"{count} problem(s) in {len(errors)} file(s); nothing stored")
    return definitions


@workflows.command("validate")
@FILES
def validate(files: tuple[Path, ...]) -> None:
    """Check definition files; every problem is listed with its path. Writes nothing.

    \b
    Example:
      gov-pipeline workflows validate examples/workflows/*.yaml
    """
    definitions = _load_all(files)
    for d in definitions:
        click.echo(f"ok  {d.tenant_id}/{d.name} ({d.trigger}, {len(d.actions)} actions)")


@workflows.command("apply")
@FILES
@actor_option
@pass_app
def apply(app: AppContext, files: tuple[Path, ...], actor: str | None) -> None:
    """Store definitions; a changed one becomes a new version. All or nothing.

    A webhook without secret_env or unsigned: true needs GOV_PIPELINE_WEBHOOK_SECRET set here.

    \b
    Example:
      gov-pipeline workflows apply examples/workflows/*.yaml
    """
    definitions = _load_all(files)
    secret = app.settings.webhook_secret
    # Every definition is checked before anything is written, so each problem is listed.
    problems = [
        f"{d.tenant_id}/{d.name}: {issue}"
        for d in definitions
        for issue in svc.signing_issues(d, webhook_secret=secret)
    ]
    if problems:
        for line in problems:
            click.echo(line, err=True)
        raise GovPipelineError(f"{len(problems)} problem(s); nothing stored")
    with app.transaction() as session:
        results = [
            svc.apply_definition(session, d, actor=app.actor(actor), webhook_secret=secret)
            for d in definitions
        ]
        lines = [
            f"{r.outcome:11} {r.workflow.tenant_id}/{r.workflow.name} v{r.version}" for r in results
        ]
    for line in lines:
        click.echo(line)


@workflows.command("list")
@tenant_option
@json_option
@pass_app
def list_(app: AppContext, tenant: str | None, as_json: bool) -> None:
    """List a tenant's workflows.

    \b
    Example:
      gov-pipeline workflows list --tenant acme
    """
    with app.transaction(app.tenant(tenant)) as session:
        rows = [
            {
                "id": w.id, "name": w.name, "type": w.type, "trigger": w.trigger,
                "status": w.status, "version": w.current_version, "priority": w.priority,
                "owner_id": w.owner_id,
            }
            for w in svc.list_workflows(session, app.tenant(tenant))
        ]  # fmt: skip
    if as_json:
        emit_json(rows)
    else:
        columns = ["id", "name", "type", "trigger", "status", "version", "priority"]
        emit_table(rows, columns, empty="no workflows")


@workflows.command("dry-run")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--entity", "--policy", "entity_id", required=True,
    help="The record to try it on: an id of the workflow's entity type (a policy's, a risk's).",
)  # fmt: skip
@click.option("--trigger", help="Pretend this trigger fired (default: the workflow's own).")
@click.option("--change", "change_id", type=int, help="Use this real change instead.")
@json_option
@pass_app
def dry_run(
    app: AppContext,
    file: Path,
    entity_id: str,
    trigger: str | None,
    change_id: int | None,
    as_json: bool,
) -> None:
    """Would it match, which condition failed, what would it do and which action would
    fail (checked with this process's settings). Nothing is written; the exit code is 0
    whatever the report says.

    \b
    Examples:
      gov-pipeline workflows dry-run examples/workflows/policy_approval.yaml --entity 3
      gov-pipeline workflows dry-run wf.yaml --entity 3 --change 17 --json
    """
    definitions = _load_all((file,))
    with app.sessions() as session:  # read only, rolled back at the end
        reports = [
            preview.dry_run(
                session,
                d,
                entity_id=entity_id,
                settings=app.settings,
                trigger=trigger,
                change_id=change_id,
            )
            for d in definitions
        ]
        session.rollback()
    if as_json:
        emit_json(reports)
        return
    for r in reports:
        verdict = "WOULD RUN" if r["would_run"] else "would not run"
        on = f"{r['entity_type']} {r['entity_id']}"
        click.echo(f"{r['workflow']}: {verdict} on {on} ({r['trigger']})")
        if not r["trigger_matches"]:
            click.echo(
                f"  trigger: the workflow listens to a different trigger, not {r['trigger']}"
            )
        if r["status"] != "active":
            click.echo(f"  status: {r['status']} (only active workflows run)")
        for failed in r["failed_conditions"]:
            click.echo(f"  failed: {failed}")
        for action in r["actions"]:
            _echo_action(action)


def _echo_action(action: dict[str, Any]) -> None:
    """A planned action and why it would fail; after a request_approval, its follow-ups."""
    click.echo(f"  action {action['step']}: {action['type']}")
    for reason in action.get("would_fail", []):
        click.echo(f"    would fail: {reason}")
    for name in preview.FOLLOW_UPS:
        for follow_up in action.get(name, []):
            _echo_action(follow_up)
