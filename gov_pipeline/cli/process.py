"""`gov-pipeline process --sync`: process pending changes in this process."""

from __future__ import annotations

import signal
import time
from types import FrameType

import click

from gov_pipeline.cli.context import AppContext, pass_app
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.domain.retry import RetryPolicy
from gov_pipeline.runners.sync import ProcessStats, process_pending


@click.command("process")
@click.option("--sync", "sync", is_flag=True, help="Process in this process (required for now).")
@click.option("--batch-size", default=200, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--max-changes", type=click.IntRange(1), help="Stop after this many changes.")
@click.option("--consumer", default="sync", show_default=True, help="Name of the stored cursor.")
@click.option("--retry-delay", default=2.0, show_default=True, type=float,
              help="First retry wait in seconds (doubles; 5 attempts).")  # fmt: skip
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

    stopping = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    if follow:
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    total = ProcessStats()
    while True:
        stats = process_pending(
            app.sessions, app.settings, consumer=consumer, batch_size=batch_size,
            max_changes=max_changes, retry=RetryPolicy(delay_s=retry_delay), on_progress=progress,
        )  # fmt: skip
        total.changes += stats.changes
        total.executions += stats.executions
        total.seconds += stats.seconds
        if not follow or stopping:
            break
        if stats.changes == 0:
            time.sleep(poll)
    click.echo(
        f"processed {total.changes} changes, {total.executions} executions ran, "
        f"in {total.seconds:.2f}s"
    )
