"""`gov-pipeline report compliance`: the compliance figures printed, and with --out kept as
files."""

from __future__ import annotations

from pathlib import Path

import click

from gov_pipeline.cli.context import AppContext, json_option, pass_app
from gov_pipeline.cli.output import emit_json, emit_table
from gov_pipeline.domain.compliance import figure_rows, overdue_items
from gov_pipeline.runners.compliance import read_compliance_report, write_report_files


@click.group()
def report() -> None:
    """Reports over the governed records."""


@report.command("compliance")
@click.option("--tenant", "-t", metavar="TENANT", help="Only this tenant (default: all).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the report (JSON) and its chart (SVG) here.")  # fmt: skip
@json_option
@pass_app
def compliance(app: AppContext, tenant: str | None, out: Path | None, as_json: bool) -> None:
    """Policies by status, overdue reviews (policies, SOPs and risks whose next review date
    has passed, not archived or closed), approval turnaround (request to decision: median
    and 90th percentile, in hours) and SLA breaches (steps decided after their due time, or
    open past it). Statuses are today's; the figures are as of now.

    \b
    Examples:
      gov-pipeline report compliance
      gov-pipeline report compliance --tenant acme --out reports --json
    """
    result = read_compliance_report(app.sessions, tenant_id=tenant)
    files = write_report_files(result, out) if out is not None else None
    if as_json:
        data = result.to_dict()
        if files is not None:
            data["files"] = {"report": str(files.report), "chart": str(files.chart)}
        emit_json(data)
        return
    click.echo(f"compliance report of {result.scope} as of {result.as_of:%Y-%m-%d %H:%M:%S} UTC")
    emit_table([{"figure": k, "value": v} for k, v in figure_rows(result)], ["figure", "value"],
               empty="")  # fmt: skip
    overdue = overdue_items(result.totals)
    if overdue:
        click.echo("")
        emit_table(overdue, ["tenant_id", "record", "title", "next_review_date", "days_overdue"],
                   empty="")  # fmt: skip
    if files is not None:
        click.echo(f"written: {files.report} and {files.chart}")
