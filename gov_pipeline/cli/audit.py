"""`gov-pipeline audit export`: one tenant's records of a period to a directory, with
progress on stderr."""

from __future__ import annotations

from pathlib import Path

import click

from gov_pipeline.cli.context import AppContext, pass_app, tenant_option
from gov_pipeline.domain.audit import DATE_HELP, ExportFormat, Period
from gov_pipeline.runners import audit_export


@click.group()
def audit() -> None:
    """Audit trail: export what happened to a tenant's records over a period."""


@audit.command("export")
@tenant_option
@click.option("--from", "start", required=True, help=f"Start, included: {DATE_HELP}.")
@click.option("--to", "end", required=True, help="End, excluded: same forms as --from.")
@click.option("--format", "fmt", type=click.Choice([f.value for f in ExportFormat]),
              default=ExportFormat.JSONL.value, show_default=True,
              help="JSON Lines (one object a line) or CSV (header row; JSON columns as JSON "
              "text).")  # fmt: skip
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Directory to write (refused when not empty, unless --force).")  # fmt: skip
@click.option("--force", is_flag=True, help="Replace an earlier export in --out.")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
@pass_app
def export(
    app: AppContext, tenant: str | None, start: str, end: str, fmt: str, out: Path,
    force: bool, quiet: bool,
) -> None:  # fmt: skip
    """Write the tenant's changes, workflow executions, action runs, decided approval steps
    and decisions of the period [--from, --to) to --out: one file per kind, manifest.json
    (tenant, period, counts, columns, generated_at) and SHA256SUMS. A row belongs to the
    period by its created_at (approval steps: decided_at). Nothing appears under --out
    until the export is whole.

    \b
    Examples:
      gov-pipeline audit export --tenant acme --from 2026-01-01 --to 2026-02-01 --out audit-2026-01
      gov-pipeline audit export -t acme --from 2026-01-05T08:00 --to 2026-01-09 --format csv --out w
      cd audit-2026-01 && sha256sum -c SHA256SUMS
    """
    period = Period.parse(start, end)

    def progress(p: audit_export.ExportProgress) -> None:
        if not quiet:
            state = "done" if p.done else "so far"
            click.echo(f"  {p.kind}: {p.rows} row(s) {state} ({p.rows_per_s:.0f} rows/s)", err=True)

    report = audit_export.export_audit(
        app.sessions, tenant_id=app.tenant(tenant), period=period, out=out, fmt=fmt,
        force=force, on_progress=progress,
    )  # fmt: skip
    counts = ", ".join(f"{kind} {n}" for kind, n in report.counts.items())
    click.echo(
        f"exported {report.rows} row(s) to {report.out} ({report.fmt}, {report.seconds:.2f}s): "
        f"{counts}"
    )
