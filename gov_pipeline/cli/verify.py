"""`gov-pipeline verify`: check the stored facts against the pipeline's guarantees."""

from __future__ import annotations

from typing import Any

import click

from gov_pipeline.checks.verify import (
    DEFAULT_GRACE_S,
    DEFAULT_STUCK_S,
    VerifyReport,
    lost_and_duplicated,
    verify,
)
from gov_pipeline.cli.context import AppContext, dagster_instance, json_option, pass_app
from gov_pipeline.cli.output import emit_json, emit_table
from gov_pipeline.domain.errors import GovPipelineError


def _dagster_instance() -> Any:
    """The instance of $DAGSTER_HOME, or None when DAGSTER_HOME is not set."""
    import os

    return dagster_instance() if os.environ.get("DAGSTER_HOME") else None


@click.command("verify")
@click.option("--tenant", "-t", metavar="TENANT", help="Only this tenant (default: all).")
@click.option("--grace", default=DEFAULT_GRACE_S, show_default=True, type=click.FloatRange(0),
              help="Seconds a new change (or run) may still be in flight.")  # fmt: skip
@click.option("--stuck-after", default=DEFAULT_STUCK_S, show_default=True,
              type=click.FloatRange(0),
              help="Seconds after which an in_progress execution counts as stuck.")  # fmt: skip
@click.option("--no-dagster", is_flag=True, help="Skip the Dagster run check.")
@json_option
@pass_app
def verify_command(
    app: AppContext,
    tenant: str | None,
    grace: float,
    stuck_after: float,
    no_dagster: bool,
    as_json: bool,
) -> None:
    """Check the invariants: every change processed, one execution per workflow and
    change, each effect once, per-entity order, every entity type's lifecycle followed,
    nothing stuck, and (with DAGSTER_HOME) every run ended or held in Redis. Exit 0 if all
    hold, 1 if any is violated.

    \b
    Examples:
      gov-pipeline verify
      gov-pipeline verify --tenant acme --grace 300 --json
    """
    instance = None if no_dagster else _dagster_instance()
    try:
        with app.transaction() as session:
            if instance is None:
                report = verify(session, tenant=tenant, grace_s=grace, stuck_s=stuck_after)
            else:
                from gov_pipeline.checks.runs import verify_with_runs

                report = verify_with_runs(
                    session, instance, tenant=tenant, grace_s=grace, stuck_s=stuck_after
                )
    finally:
        if instance is not None:
            instance.dispose()
    lost, duplicated = lost_and_duplicated(report)
    if as_json:
        emit_json({**report.to_dict(), "lost": lost, "duplicated": duplicated})
    else:
        _print_report(report, lost, duplicated)
    if not report.ok:
        names = ", ".join(f"{i.name} ({i.violations})" for i in report.invariants if not i.ok)
        raise GovPipelineError(f"invariants violated: {names}")


def _print_report(report: VerifyReport, lost: int, duplicated: int) -> None:
    rows = [
        {
            "invariant": i.name,
            "ok": "yes" if i.ok else "NO",
            "checked": i.checked,
            "violations": i.violations,
            "examples": [str(e) for e in i.examples[:3]],
        }
        for i in report.invariants
    ]
    emit_table(rows, ["invariant", "ok", "checked", "violations", "examples"], empty="")
    f = report.figures
    click.echo(
        f"changes {f['changes']} (processed {f['processed']}), executions "
        f"{f['executions']} {f['executions_by_status']}, action runs {f['action_runs']}, "
        f"notifications {f['notifications']}, tasks {f['tasks']}"
        + (f", runs {f['runs']} {f['runs_by_status']}" if "runs" in f else "")
        + f"; lost {lost}, duplicated {duplicated}"
    )
    click.echo(
        "records (changes) by entity type: "
        + ", ".join(
            f"{t} {n} ({f['changes_by_entity_type'].get(t, 0)})"
            for t, n in f["records_by_entity_type"].items()
        )
    )
    click.echo(
        f"webhook deliveries by status {f['webhook_deliveries_by_status']}, "
        f"emails by status {f['email_deliveries_by_status']}"
    )
