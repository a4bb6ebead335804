"""`gov-pipeline policies|risks|requirements|tasks|sops|exceptions ...`: create, update,
move, delete, show, list and import the records of each governed entity type, and complete
a review of those with a review cycle (policies, SOPs, risks).

One command group per entity type, built from the same code: `CommandSpec` says what
differs (the options of `create`, the filters of `list`, the columns of its table).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
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
from gov_pipeline.domain.entities import KINDS, EntityKind
from gov_pipeline.domain.reviews import reviewable_text
from gov_pipeline.domain.statuses import EntityType
from gov_pipeline.services import records, reviews


@dataclass(frozen=True)
class FieldOption:
    """A command-line option setting (or filtering on) one field."""

    flag: str  # "--type"
    field: str  # "policy_type"
    help: str
    example: str = ""  # a value for the examples, when it is required


@dataclass(frozen=True)
class CommandSpec:
    kind: EntityKind
    create: tuple[FieldOption, ...]
    filters: tuple[FieldOption, ...]
    columns: tuple[str, ...]
    help: str

    @property
    def name(self) -> str:
        return self.kind.command


_TITLE = FieldOption("--title", "title", "Title.", '"Access review"')
_OWNER = FieldOption("--owner", "owner_id", "Owner user id.")


def _spec(
    entity_type: EntityType,
    help_: str,
    create: tuple[FieldOption, ...],
    filters: tuple[FieldOption, ...],
    columns: tuple[str, ...],
) -> CommandSpec:
    return CommandSpec(KINDS[entity_type], create, filters, columns, help_)


SPECS: tuple[CommandSpec, ...] = (
    _spec(
        EntityType.POLICY,
        "Policies: every write is captured as a change by the database itself.",
        (
            FieldOption("--title", "title", "Title.", '"Access control"'),
            FieldOption(
                "--type", "policy_type", 'Policy type, e.g. "Information Security".', "Security"
            ),
            _OWNER,
            FieldOption("--content", "content", "Body text."),
        ),
        (FieldOption("--type", "policy_type", "Only this policy type."), _OWNER),
        ("id", "title", "policy_type", "status", "owner_id", "next_review_date"),
    ),
    _spec(
        EntityType.RISK,
        "Risks: likelihood and impact (1-5) give the risk score; assessed on the "
        "`assessment` lane.",
        (
            FieldOption("--title", "title", "Title.", '"Vendor outage"'),
            FieldOption("--category", "category", 'Category, e.g. "operational".', "operational"),
            _OWNER,
            FieldOption("--likelihood", "likelihood", "Likelihood, 1-5."),
            FieldOption("--impact", "impact", "Impact, 1-5."),
        ),
        (FieldOption("--category", "category", "Only this category."), _OWNER),
        ("id", "title", "category", "status", "risk_score", "owner_id", "next_review_date"),
    ),
    _spec(
        EntityType.COMPLIANCE_REQUIREMENT,
        "Compliance requirements of a framework; worked on the `evidence` lane.",
        (
            FieldOption("--title", "title", "Title.", '"Access reviews"'),
            FieldOption("--framework", "framework", 'Framework, e.g. "ISO 27001".', "ISO27001"),
            FieldOption("--reference", "reference", 'The control\'s reference, e.g. "A.5.18".'),
            _OWNER,
            FieldOption("--due", "due_date", "Due date (YYYY-MM-DD)."),
        ),
        (FieldOption("--framework", "framework", "Only this framework."), _OWNER),
        ("id", "title", "framework", "reference", "status", "owner_id", "due_date"),
    ),
    _spec(
        EntityType.TASK,
        "Tasks: made by workflows (create_task) or by hand; governed like any entity.",
        (
            FieldOption("--title", "title", "Title.", '"Collect evidence"'),
            FieldOption("--assignee", "assignee_id", "Assignee user id."),
            FieldOption("--priority", "priority", "critical, high, medium or low."),
            FieldOption("--due", "due_date", "Due date (YYYY-MM-DD)."),
        ),
        (
            FieldOption("--assignee", "assignee_id", "Only this assignee."),
            FieldOption("--priority", "priority", "Only this priority."),
        ),
        ("id", "title", "priority", "status", "assignee_id", "due_date", "entity_id"),
    ),
    _spec(
        EntityType.SOP,
        "Standard operating procedures: governed documents with a policy's lifecycle.",
        (
            FieldOption("--title", "title", "Title.", '"Onboarding"'),
            FieldOption("--area", "process_area", 'Process area, e.g. "HR".', "HR"),
            _OWNER,
            FieldOption("--content", "content", "Body text."),
        ),
        (FieldOption("--area", "process_area", "Only this process area."), _OWNER),
        ("id", "title", "process_area", "status", "owner_id", "next_review_date"),
    ),
    _spec(
        EntityType.POLICY_EXCEPTION,
        "Policy exceptions: a departure from a policy, until its expiry date.",
        (
            FieldOption("--policy", "policy_id", "The policy it departs from (id).", "12"),
            FieldOption("--title", "title", "Title.", '"Legacy VPN"'),
            _OWNER,
            FieldOption("--expires", "expiry_date", "Expiry date (YYYY-MM-DD)."),
        ),
        (FieldOption("--policy", "policy_id", "Only exceptions of this policy."), _OWNER),
        ("id", "policy_id", "title", "status", "risk_level", "owner_id", "expiry_date"),
    ),
)


def lifecycle_text(kind: EntityKind) -> str:
    """`draft -> in_review | archived; ...` (final statuses left out)."""
    moves = kind.lifecycle.transitions
    return "; ".join(
        f"{source} -> {' | '.join(sorted(targets))}" for source, targets in moves.items() if targets
    )


def _example(spec: CommandSpec, *rest: str) -> str:
    return " ".join(("gov-pipeline", spec.name, *rest))


def _create_command(spec: CommandSpec) -> click.Command:
    kind = spec.kind
    required = [o for o in spec.create if o.field in kind.required]
    usage = " ".join(f"{o.flag} {o.example}" for o in required)

    @click.command("create")
    @tenant_option
    @actor_option
    @click.option(
        "--status",
        help=f"Only {kind.lifecycle.initial}: a new {kind.noun} starts there and moves with "
        f"set-status; to load ones in another status use `{spec.name} import`.",
    )
    @click.option(
        "--set", "assignments", multiple=True, metavar="FIELD=VALUE", help="Any other field."
    )
    @click.option("--json", "as_json", is_flag=True, help=f"Print the created {kind.noun} as JSON.")
    @pass_app
    def create(
        app: AppContext,
        /,
        tenant: str | None,
        actor: str | None,
        status: str | None,
        assignments: tuple[str, ...],
        as_json: bool,
        **given: Any,
    ) -> None:
        fields: dict[str, Any] = parse_assignments(assignments)
        for option in spec.create:
            value = given[option.field]
            if value is not None:
                fields[option.field] = value
        if status is not None:
            fields["status"] = status
        with app.transaction(app.tenant(tenant)) as session:
            record = records.create_record(
                session, kind.entity_type, tenant_id=app.tenant(tenant), fields=fields,
                actor=records.Actor(app.actor(actor)),
            )  # fmt: skip
            data = records.record_to_dict(record, include_content=False)
        if as_json:
            emit_json(data)
        else:
            click.echo(f"created {kind.noun} {data['id']} ({data['status']}): {data['title']}")

    create.help = (
        f"Create a {kind.noun}, as {kind.lifecycle.initial}.\n\n\b\nExample:\n  "
        + _example(spec, "create -t acme", usage)
    )
    for option in reversed(spec.create):
        create = click.option(
            option.flag, option.field, required=option in required, help=option.help
        )(create)
    return create


def _update_command(spec: CommandSpec) -> click.Command:
    kind = spec.kind

    @click.command("update")
    @click.argument("record_id", metavar=f"{kind.entity_type.upper()}_ID")
    @tenant_option
    @actor_option
    @click.option(
        "--set", "assignments", multiple=True, required=True, metavar="FIELD=VALUE",
        help="A field.",
    )  # fmt: skip
    @pass_app
    def update(
        app: AppContext,
        record_id: str,
        tenant: str | None,
        actor: str | None,
        assignments: tuple[str, ...],
    ) -> None:
        with app.transaction(app.tenant(tenant)) as session:
            record = records.update_record(
                session, kind.entity_type, tenant_id=app.tenant(tenant), record_id=record_id,
                fields=parse_assignments(assignments), actor=records.Actor(app.actor(actor)),
            )  # fmt: skip
            click.echo(f"updated {kind.noun} {record.id}")

    update.help = (
        f"Change fields of a {kind.noun} (values are JSON when they parse as JSON).\n\n\b\n"
        f"Example:\n  {_example(spec, 'update 12 --tenant acme --set owner_id=dave')}"
    )
    return update


def _set_status_command(spec: CommandSpec) -> click.Command:
    kind = spec.kind

    @click.command("set-status")
    @click.argument("record_id", metavar=f"{kind.entity_type.upper()}_ID")
    @click.argument("status")
    @tenant_option
    @actor_option
    @pass_app
    def set_status(
        app: AppContext, record_id: str, status: str, tenant: str | None, actor: str | None
    ) -> None:
        with app.transaction(app.tenant(tenant)) as session:
            record = records.get_record(
                session, kind.entity_type, tenant_id=app.tenant(tenant), record_id=record_id
            )
            before = record.status
            records.transition_record(
                session, kind.entity_type, tenant_id=app.tenant(tenant), record_id=record_id,
                to_status=status, actor=records.Actor(app.actor(actor)),
            )  # fmt: skip
            click.echo(f"{kind.noun} {record.id}: {before} -> {record.status}")

    first = next(iter(kind.lifecycle.transitions[kind.lifecycle.initial]))
    set_status.help = (
        f"Move a {kind.noun} through its lifecycle (illegal moves are refused).\n\n\b\n"
        f"Lifecycle: {lifecycle_text(kind)}.\n\b\n"
        f"Example:\n  {_example(spec, f'set-status 12 {first} --tenant acme --actor alice')}"
    )
    return set_status


def _delete_command(spec: CommandSpec) -> click.Command:
    kind = spec.kind

    @click.command("delete")
    @click.argument("record_id", metavar=f"{kind.entity_type.upper()}_ID")
    @tenant_option
    @actor_option
    @pass_app
    def delete(app: AppContext, record_id: str, tenant: str | None, actor: str | None) -> None:
        with app.transaction(app.tenant(tenant)) as session:
            record = records.soft_delete_record(
                session, kind.entity_type, tenant_id=app.tenant(tenant), record_id=record_id,
                actor=records.Actor(app.actor(actor)),
            )  # fmt: skip
            click.echo(f"deleted {kind.noun} {record.id}")

    delete.help = (
        f"Soft-delete a {kind.noun} (kept, hidden from lists, captured as a change).\n\n\b\n"
        f"Example:\n  {_example(spec, 'delete 12 --tenant acme')}"
    )
    return delete


def _show_command(spec: CommandSpec) -> click.Command:
    kind = spec.kind

    @click.command("show")
    @click.argument("record_id", metavar=f"{kind.entity_type.upper()}_ID")
    @tenant_option
    @json_option
    @click.option("--deleted", is_flag=True, help=f"Also show a soft-deleted {kind.noun}.")
    @pass_app
    def show(
        app: AppContext, record_id: str, tenant: str | None, as_json: bool, deleted: bool
    ) -> None:
        with app.transaction(app.tenant(tenant)) as session:
            record = records.get_record(
                session, kind.entity_type, tenant_id=app.tenant(tenant), record_id=record_id,
                include_deleted=deleted,
            )  # fmt: skip
            data = records.record_to_dict(record)
        if as_json:
            emit_json(data)
        else:
            emit_record(data)

    show.help = f"Show one {kind.noun}.\n\n\b\nExample:\n  " + _example(
        spec, "show 12 --tenant acme --json"
    )
    return show


def _list_command(spec: CommandSpec) -> click.Command:
    kind = spec.kind

    @click.command("list")
    @tenant_option
    @click.option("--status", help="Only this status.")
    @click.option("--limit", default=50, show_default=True, type=int, help="Page size (1-1000).")
    @click.option("--offset", default=0, show_default=True, type=int, help="Rows to skip.")
    @json_option
    @pass_app
    def list_(
        app: AppContext,
        /,
        tenant: str | None,
        status: str | None,
        limit: int,
        offset: int,
        as_json: bool,
        **given: Any,
    ) -> None:
        equal = {o.field: given[o.field] for o in spec.filters if given[o.field] is not None}
        with app.transaction(app.tenant(tenant)) as session:
            page = records.list_records(
                session, kind.entity_type, tenant_id=app.tenant(tenant), status=status,
                equal=equal, limit=limit, offset=offset,
            )  # fmt: skip
            rows = [records.record_to_dict(r, include_content=False) for r in page.items]
        if as_json:
            emit_json({"total": page.total, "limit": limit, "offset": offset, "items": rows})
            return
        emit_table(rows, list(spec.columns), empty=f"no {spec.name} match")
        if rows:
            click.echo(f"({offset + 1}-{offset + len(rows)} of {page.total})")

    list_.help = (
        f"List a tenant's {spec.name}, with filters and paging.\n\n\b\nExamples:\n  "
        + _example(spec, f"list --tenant acme --status {kind.lifecycle.initial}")
        + "\n  "
        + _example(spec, "list -t acme --limit 20 --offset 20 --json")
    )
    for option in reversed(spec.filters):
        list_ = click.option(option.flag, option.field, help=option.help)(list_)
    return list_


def _import_command(spec: CommandSpec) -> click.Command:
    kind = spec.kind

    @click.command("import")
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
        from gov_pipeline.runners import importer

        rows = importer.read_import_file(file, fmt, kind.entity_type)
        with click.progressbar(
            length=len(rows),
            label=f"importing {len(rows)} {spec.name}",
            file=io.StringIO() if quiet else None,
        ) as bar:
            last = 0

            def progress(done: int, total: int) -> None:
                nonlocal last
                bar.update(done - last)
                last = done

            report = importer.import_records(
                app.sessions, tenant_id=app.tenant(tenant), rows=rows,
                entity_type=kind.entity_type, chunk_size=chunk_size, actor=app.actor(actor),
                on_progress=progress,
            )  # fmt: skip
        click.echo(
            f"imported {report.created} {spec.name} (ids {report.first_id}-{report.last_id}) "
            f"in {report.chunks} chunk(s), {report.seconds:.2f}s"
        )

    import_.help = (
        f"Create {spec.name} from a CSV or JSON file: every row checked first, then written "
        "in chunks (all or nothing per file on bad rows), each insert captured as a change. "
        f"Rows may carry any status of the lifecycle.\n\n\b\nExamples:\n  "
        + _example(spec, f"import {spec.name}.csv --tenant acme")
        + "\n  "
        + _example(spec, "import export.json -t acme --chunk-size 1000")
    )
    return import_


def _complete_review_command(spec: CommandSpec) -> click.Command:
    kind = spec.kind

    @click.command("complete-review")
    @click.argument("record_id", metavar=f"{kind.entity_type.upper()}_ID")
    @tenant_option
    @click.option("--as", "reviewed_by", required=True, metavar="USER", help="Who reviewed it.")
    @click.option("--notes", help="What the review found (kept with it).")
    @pass_app
    def complete_review(
        app: AppContext, record_id: str, tenant: str | None, reviewed_by: str, notes: str | None
    ) -> None:
        with app.transaction(app.tenant(tenant)) as session:
            next_review = reviews.complete_review(
                session, tenant_id=app.tenant(tenant), entity_type=kind.entity_type,
                entity_id=record_id, reviewed_by=reviewed_by, notes=notes,
            )  # fmt: skip
        scheduled = (
            f"next review {next_review.isoformat()}"
            if next_review
            else "no next review (review_frequency as_needed or not set)"
        )
        click.echo(f"{kind.noun} {record_id} reviewed by {reviewed_by}; {scheduled}")

    complete_review.help = (
        f"Record a completed review of a {kind.noun} "
        f"({reviewable_text(kind)}): its next_review_date moves to today + its "
        "review_frequency.\n\n\b\nExample:\n  "
        + _example(spec, 'complete-review 12 -t acme --as dave --notes "Still accurate"')
    )
    return complete_review


_COMMANDS: tuple[Callable[[CommandSpec], click.Command], ...] = (
    _create_command, _update_command, _set_status_command, _delete_command, _show_command,
    _list_command, _import_command,
)  # fmt: skip


def record_group(spec: CommandSpec) -> click.Group:
    """The command group of one entity type."""
    group = click.Group(spec.name, help=spec.help)
    for build in _COMMANDS:
        group.add_command(build(spec))
    if spec.kind.reviewable:
        group.add_command(_complete_review_command(spec))
    return group


GROUPS: dict[str, click.Group] = {spec.name: record_group(spec) for spec in SPECS}
