"""`gov-pipeline worker` and `gov-pipeline queue ...`: the Redis run queue."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gov_pipeline.cli.context import AppContext, dagster_instance, json_option, pass_app
from gov_pipeline.cli.output import emit_json, emit_table
from gov_pipeline.domain.errors import (
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)

if TYPE_CHECKING:
    from gov_pipeline.coordinator.run_coordinator import RedisRunCoordinator
    from gov_pipeline.coordinator.worker import Worker, WorkerStats

DEFAULT_WORKSPACE = Path(__file__).resolve().parents[2] / "workspace.yaml"


def _instance() -> Any:
    """The Dagster instance of $DAGSTER_HOME, with the Redis run coordinator configured."""
    from gov_pipeline.coordinator.run_coordinator import RedisRunCoordinator

    instance: Any = dagster_instance()
    if not isinstance(instance.run_coordinator, RedisRunCoordinator):
        raise ConfigurationError(
            f"$DAGSTER_HOME/dagster.yaml names {type(instance.run_coordinator).__name__}, not "
            "gov_pipeline.coordinator.run_coordinator.RedisRunCoordinator"
        )
    return instance


def check_lanes(coordinator: RedisRunCoordinator, lanes: Sequence[str], option: str) -> None:
    """Refuse lanes the coordinator does not know: neither configured (its `lanes`, over the
    defaults) nor seen by Redis. Redis is asked only when a lane is not configured.

    Raises:
        InvalidInputError: a lane is unknown; the message lists the known ones.
    """
    unknown = [lane for lane in lanes if lane not in coordinator.limits.lanes]
    if not unknown:
        return
    known = coordinator.queue.lanes()
    unknown = [lane for lane in unknown if lane not in known]
    if unknown:
        names = ", ".join(repr(lane) for lane in unknown)
        raise InvalidInputError(
            option,
            f"unknown lane {names}; known lanes: {', '.join(known)} (a new lane is added under "
            "the run coordinator's lanes in dagster.yaml)",
        )


def worker_summary(stats: WorkerStats, seconds: float) -> str:
    """The line a worker prints when it exits; runs Redis had lost count as requeued."""
    requeued = f"{stats.requeued} requeued"
    if stats.lost:
        requeued += f" ({stats.lost} after Redis lost them)"
    released = f", {stats.released} stale slots released" if stats.released else ""
    return (
        f"worker done in {seconds:.1f}s: {stats.claimed} claimed, {stats.finished} finished, "
        f"{stats.recovered} recovered, {requeued}{released}, outcomes {stats.outcomes}"
    )


@click.command("worker")
@click.option(
    "--mode",
    type=click.Choice(["launch", "execute"]),
    default="launch",
    show_default=True,
    help="launch: hand runs to the run launcher; execute: run them in this warm process.",
)
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--lanes", default="", help="Comma-separated lanes to serve (default: all).")
@click.option("--burst", is_flag=True, help="Drain the queue, then exit.")
@click.option("-w", "--workspace", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=DEFAULT_WORKSPACE, show_default=True)  # fmt: skip
@click.option("--worker-id", help="Name of this worker (default: host:pid).")
@pass_app
def worker(
    app: AppContext,
    mode: str,
    concurrency: int,
    lanes: str,
    burst: bool,
    workspace: Path,
    worker_id: str | None,
) -> None:
    """Claim runs from the Redis queue and launch or execute them. Any number, any host.

    The first SIGTERM finishes the current runs, the second stops now.

    \b
    Examples:
      DAGSTER_HOME=$PWD/dagster-home gov-pipeline worker --concurrency 4
      gov-pipeline worker --mode execute --lanes policy,notification
      gov-pipeline worker --burst
    """
    from gov_pipeline.coordinator.queue import default_worker_id
    from gov_pipeline.coordinator.worker import Worker
    from gov_pipeline.services.run_fences import fence_run

    logging.getLogger("gov_pipeline").setLevel(logging.INFO)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    instance = _instance()
    served = [x.strip() for x in lanes.split(",") if x.strip()]
    check_lanes(instance.run_coordinator, served, "--lanes")
    started = time.monotonic()
    name = worker_id or default_worker_id()
    children: list[subprocess.Popen[bytes]] = []
    if mode == "execute" and concurrency > 1:
        # One warm process per slot: Dagster's execute_run is not thread-safe.
        children = _start_execute_workers(name, concurrency - 1, lanes, workspace, burst)
        name, concurrency = f"{name}/0", 1
    worker_ = Worker(
        instance, workspace=workspace, mode=mode, concurrency=concurrency,
        lanes=served, burst=burst, worker_id=name,
        reconcile_every_s=float(app.settings.worker_reconcile_s),
        # The application's database is opened at the first fence, not before.
        fence=lambda run_id, token, why: fence_run(app.sessions, run_id, token, why),
    )  # fmt: skip
    stats = _run_beside(worker_, children)
    click.echo(worker_summary(stats, time.monotonic() - started))


def _start_execute_workers(
    name: str, count: int, lanes: str, workspace: Path, burst: bool
) -> list[subprocess.Popen[bytes]]:
    """Start `count` more `gov-pipeline worker --mode execute --concurrency 1` processes,
    named `name/1` to `name/count`, serving the same lanes."""
    children = []
    for i in range(1, count + 1):
        args = [
            sys.argv[0], "worker", "--mode", "execute", "--concurrency", "1", "--lanes", lanes,
            "-w", str(workspace), "--worker-id", f"{name}/{i}",
        ]  # fmt: skip
        children.append(subprocess.Popen(args + (["--burst"] if burst else [])))
    return children


def _run_beside(worker_: Worker, children: Sequence[subprocess.Popen[bytes]]) -> WorkerStats:
    """Run the worker in this process; SIGTERM and SIGINT reach the children too, and they
    are waited for before returning."""

    def stop(signum: int, frame: Any) -> None:
        for child in children:
            child.send_signal(signum)
        worker_.request_stop(signum, frame)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return worker_.run(install_signals=False)
    finally:
        for child in children:
            child.wait()


@click.group()
def queue() -> None:
    """The Redis run queue: lanes, workers, pause/resume, requeue."""


@queue.command("status")
@json_option
def status(as_json: bool) -> None:
    """Per lane: queued, running, oldest wait, limit, retries and timeout; workers with
    their last heartbeat.

    \b
    Example:
      gov-pipeline queue status --json
    """
    from gov_pipeline.domain.lanes import lane_rule
    from gov_pipeline.domain.retry import backoff_text

    coordinator = _instance().run_coordinator
    data = coordinator.queue.status()
    for lane in data["lanes"]:  # what a run of the lane gets (its tags may say otherwise)
        rule = lane_rule(lane["lane"], coordinator.rules)
        lane.update(attempts=rule.retry.max_attempts, backoff=backoff_text(rule.retry),
                    timeout_s=rule.timeout_s)  # fmt: skip
    if as_json:
        emit_json(data)
        return
    emit_table(data["lanes"], ["lane", "queued", "running", "oldest_wait_s", "limit", "paused",
                               "attempts", "backoff", "timeout_s"], empty="no lanes")  # fmt: skip
    click.echo(f"running {data['running']} of at most {data['max_concurrent_runs']}")
    now = time.time()
    workers = [
        {**w, "seen_s_ago": round(now - float(w.get("last_heartbeat", 0)), 1)}
        for w in data["workers"]
    ]
    emit_table(workers, ["worker_id", "alive", "mode", "lanes", "running", "seen_s_ago"],
               empty="no workers")  # fmt: skip


@queue.command("pause")
@click.argument("lane")
def pause(lane: str) -> None:
    """Stop claiming from a lane (runs keep waiting in it).

    \b
    Example:
      gov-pipeline queue pause import
    """
    coordinator = _instance().run_coordinator
    check_lanes(coordinator, [lane], "LANE")
    coordinator.queue.pause(lane)
    click.echo(f"lane {lane} paused")


@queue.command("resume")
@click.argument("lane")
def resume(lane: str) -> None:
    """Claim from a paused lane again.

    \b
    Example:
      gov-pipeline queue resume import
    """
    coordinator = _instance().run_coordinator
    check_lanes(coordinator, [lane], "LANE")
    coordinator.queue.resume(lane)
    click.echo(f"lane {lane} resumed")


@queue.command("requeue")
@click.argument("run_id")
def requeue(run_id: str) -> None:
    """Put a QUEUED run back in line (e.g. after Redis lost it, or a worker vanished).

    \b
    Example:
      gov-pipeline queue requeue 6c426521-bc1e-42c9-91e3-0284787ce81a
    """
    from dagster import DagsterRunStatus

    from gov_pipeline.coordinator.states import RunState

    instance = _instance()
    coordinator = instance.run_coordinator
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise NotFoundError("run", run_id)
    if run.status != DagsterRunStatus.QUEUED:
        raise ConflictError(f"run {run_id} is {run.status.value}; only QUEUED runs can be requeued")
    holder = coordinator.queue.lease_holder(run_id)
    if holder is not None:
        raise ConfigurationError(
            f"run {run_id} is held by worker {holder}; it is requeued by itself if that worker dies"
        )
    record = coordinator.queue.record(run_id)
    # A live record goes back to its old place (even if its lane lost it); none: enqueue anew.
    if not (
        record
        and record.get("state") != RunState.FINISHED
        and coordinator.queue.requeue(run_id, "requeued by an operator")
    ):
        coordinator.enqueue(run)
    click.echo(f"run {run_id} queued again in lane {coordinator.queue.record(run_id).get('lane')}")
