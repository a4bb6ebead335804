"""`gov-pipeline process --sync`: process pending changes in this process."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import FrameType

import click

from gov_pipeline.cli.context import AppContext, pass_app
from gov_pipeline.domain.errors import ExecutionsFailedError, InvalidInputError
from gov_pipeline.domain.retry import RetryPolicy
from gov_pipeline.runners.sync import ProcessStats, process_pending
from gov_pipeline.services.executions import FailedExecution


@click.command("process")
@click.option("--sync", "sync", is_flag=True, help="Process in this process (required for now).")
@click.option("--batch-size", default=200, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--max-changes", type=click.IntRange(1), help="Stop after this many changes.")
@click.option("--consumer", default="sync", show_default=True, help="Name of the stored cursor.")
@click.option("--retry-delay", default=2.0, show_default=True, type=float,
              help="First retry wait in seconds (then 3x, 7x, 15x it; 5 attempts).")  # fmt: skip
@click.option(
    "--follow",
    is_flag=True,
    help="Keep going: look for new changes every --poll seconds until stopped.",
)
@click.option(
    "--poll",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.05),
    help="Seconds between looks with --follow.",
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
@pass_app
def process(
    app: AppContext,
    sync: bool,
    batch_size: int,
    max_changes: int | None,
    consumer: str,
    retry_delay: float,
    follow: bool,
    poll: float,
    quiet: bool,
) -> None:
    """Read committed changes after the stored cursor and run the workflows they trigger.

    The backward-compatible path and the fallback when no orchestration runs; safe to run
    beside the Dagster path (each effect happens once).

    With --follow it keeps processing as changes arrive, until SIGTERM or Ctrl-C (the
    batch in hand is finished first).

    Exits 1 when an execution it ran ended failed: after the summary, one line on stderr
    per failed execution with its reason (with --follow, as they happen).

    \b
    Examples:
      gov-pipeline process --sync
      gov-pipeline process --sync --follow --poll 0.5 --quiet
    """
    if not sync:
        raise InvalidInputError("--sync", "is required: the Dagster path runs from its sensor")

    def progress(stats: ProcessStats) -> None:
        if not quiet and stats.changes:
            rate = stats.changes / stats.seconds if stats.seconds else 0.0
            click.echo(
                f"  {stats.changes} changes, {stats.executions} executions ({rate:.0f} changes/s)",
                err=True,
            )

    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    if follow:
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def once() -> ProcessStats:
        return process_pending(
            app.sessions, app.settings, consumer=consumer, batch_size=batch_size,
            max_changes=max_changes, retry=RetryPolicy(delay_s=retry_delay), on_progress=progress,
        )  # fmt: skip

    _conclude(_repeat(once, follow=follow, poll=poll, stopping=stopping), reported=follow)


def _conclude(total: ProcessStats, *, reported: bool) -> None:
    """The summary line; then, unless `reported` already, the failed executions, and the
    error that ends the command if there are any."""
    failed = f"{len(total.failed)} failed, " if total.failed else ""
    click.echo(
        f"processed {total.changes} changes, {total.executions} executions ran, {failed}"
        f"in {total.seconds:.2f}s"
    )
    if not reported:
        _report_failed(total.failed)
    if total.failed:
        ids = ", ".join(str(f.execution_id) for f in total.failed)
        raise ExecutionsFailedError(
            f"{len(total.failed)} execution(s) failed: {ids} (retry with: gov-pipeline "
            "executions retry ID --tenant TENANT)",
            [f.execution_id for f in total.failed],
        )


def _repeat(
    once: Callable[[], ProcessStats], *, follow: bool, poll: float, stopping: list[int]
) -> ProcessStats:
    """Process once; with `follow`, again and again until a signal was caught (reporting
    the failed executions of each pass as it ends). Returns the totals."""
    total = ProcessStats()
    while True:
        stats = once()
        total.changes += stats.changes
        total.executions += stats.executions
        total.seconds += stats.seconds
        total.failed += stats.failed
        if follow:
            _report_failed(stats.failed)
        if not follow or stopping:
            return total
        if stats.changes == 0:
            time.sleep(poll)


def _report_failed(failed: list[FailedExecution]) -> None:
    """One line on stderr per failed execution: which, on what, and the whole reason."""
    for f in failed:
        click.echo(
            f"execution {f.execution_id} ({f.workflow} on {f.entity_type} {f.entity_id}, "
            f"tenant {f.tenant_id}) failed: {' '.join(f.reason.split())}",
            err=True,
        )
