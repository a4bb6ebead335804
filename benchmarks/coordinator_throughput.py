"""Runs per second through the Redis run coordinator, side by side with Dagster's own queue.

Usage: python -m benchmarks.coordinator_throughput [--runs 20] [--json PATH]

The same short job (`execute_workflow`: one workflow on one policy) is submitted N times,
in this process, the way `dagster job launch` does (`_create_run` + `instance.submit_run`),
and timed from the first submit until every run is SUCCESS. Configurations:

- dagster-queued:   QueuedRunCoordinator + `dagster-daemon run` (dequeue every 1 s),
                    DefaultRunLauncher, max_concurrent_runs 4;
- redis-launch:     RedisRunCoordinator + `gov-pipeline worker --mode launch --concurrency 4`
                    (DefaultRunLauncher: a new process per run);
- redis-execute:    RedisRunCoordinator + one `gov-pipeline worker --mode execute` (warm);
- redis-execute-2w: the same with two worker processes.

Each configuration gets a fresh DAGSTER_HOME with PostgreSQL storage, a fresh app database and
a unique Redis key prefix; all are removed at the end, even on failure. The code location's
sensors and schedules are stopped in each fresh instance so that only the benchmark's runs
compete for the slots. Per-run latency is end_time - enqueued_time from Dagster's run stats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from gov_pipeline.config import load_settings
from gov_pipeline.coordinator.queue import delete_queue
from gov_pipeline.db.engine import make_engine, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS, APP_ROLE
from gov_pipeline.db.migrate import upgrade
from gov_pipeline.domain.definitions import load_definition_file
from gov_pipeline.embedded.instance import ROOT, WORKSPACE, dagster_env, prepare_instance
from gov_pipeline.embedded.processes import bin_path, stop_process_group
from gov_pipeline.services import policies, tenants, workflows

JOB = "execute_workflow"
TENANT = "acme"
WORKFLOW_FILE = ROOT / "examples" / "workflows" / "review_reminder.yaml"
CONFIGS = ("dagster-queued", "redis-launch", "redis-execute", "redis-execute-2w")
MAX_CONCURRENT = 4
FAILED = {"FAILURE", "CANCELED"}

_T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Setup:
    """How one configuration runs: the coordinator and the processes that serve it."""

    name: str
    coordinator: str  # "queued" or "redis"
    mode: str | None = None  # worker mode (redis only)
    workers: int = 0
    concurrency: int = 1


SETUPS = {
    "dagster-queued": Setup("dagster-queued", "queued"),
    "redis-launch": Setup("redis-launch", "redis", "launch", 1, MAX_CONCURRENT),
    "redis-execute": Setup("redis-execute", "redis", "execute", 1, 1),
    "redis-execute-2w": Setup("redis-execute-2w", "redis", "execute", 2, 1),
}


def instance_yaml(setup: Setup, storage_url: str, redis_url: str, prefix: str) -> str:
    storage = f"storage:\n  postgres:\n    postgres_url: {storage_url}\n"
    if setup.coordinator == "queued":
        coordinator = f"""\
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: {MAX_CONCURRENT}
    dequeue_interval_seconds: 1
"""
    else:
        coordinator = f"""\
instance_class:
  module: gov_pipeline.coordinator.instance
  class: GovDagsterInstance
run_coordinator:
  module: gov_pipeline.coordinator.run_coordinator
  class: RedisRunCoordinator
  config:
    redis_url: {redis_url}
    key_prefix: {prefix}
    max_concurrent_runs: {MAX_CONCURRENT}
    fallback: fail
"""
    rest = "run_launcher:\n  module: dagster\n  class: DefaultRunLauncher\n"
    return storage + coordinator + rest + "telemetry:\n  enabled: false\n"


# -- databases and Redis ----------------------------------------------------------------


@contextmanager
def database(admin_url: str, name: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the block; dropped (WITH FORCE) afterwards."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def redis_prefix(redis_url: str, prefix: str) -> Iterator[str]:
    """A key prefix whose keys are all deleted afterwards."""
    try:
        yield prefix
    finally:
        delete_queue(redis_url, prefix)


def seed_app_db(url: str) -> tuple[str, int]:
    """Migrate, add the tenant, its users, one policy and one workflow; (workflow, policy id)."""
    upgrade(url)
    engine = make_engine(url, role=APP_ROLE)
    try:
        sessions = make_sessionmaker(engine, tenant=ALL_TENANTS)
        with sessions.begin() as session:
            tenants.create_tenant(session, tenant_id=TENANT, name="Acme Corp")
            tenants.upsert_user(session, tenant_id=TENANT, user_id="olivia", roles=["policy_owner"])
            tenants.upsert_user(
                session, tenant_id=TENANT, user_id="carol", roles=["compliance_officer"]
            )
            [definition] = load_definition_file(WORKFLOW_FILE)
            workflow = workflows.apply_definition(session, definition, actor="bench").workflow.name
            policy_id = policies.create_policy(
                session,
                tenant_id=TENANT,
                fields={"title": "Access control", "policy_type": "Security", "owner_id": "olivia"},
                actor=policies.Actor("olivia"),
            ).id
        return workflow, policy_id
    finally:
        engine.dispose()


# -- processes ----------------------------------------------------------------------------


@contextmanager
def processes(setup: Setup, env: dict[str, str], log_dir: Path) -> Iterator[list[Path]]:
    """Start the daemon or the workers (each its own process group); stop them afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        if setup.coordinator == "queued":
            commands = [[bin_path("dagster-daemon"), "run", "-w", str(WORKSPACE)]]
        else:
            commands = [
                [
                    bin_path("gov-pipeline"), "worker", "--mode", str(setup.mode),
                    "--concurrency", str(setup.concurrency), "-w", str(WORKSPACE),
                    "--worker-id", f"bench-{setup.name}-{i}",
                ]
                for i in range(setup.workers)
            ]  # fmt: skip
        for i, command in enumerate(commands):
            log_path = log_dir / f"{setup.name}-{i}.log"
            logs.append(log_path)
            with log_path.open("ab") as log:
                started.append(
                    subprocess.Popen(
                        command,
                        cwd=ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        yield logs
    finally:
        for process in started:
            stop_process_group(process)


def wait_ready(setup: Setup, instance: Any, timeout_s: float) -> None:
    """Until the daemon's queue heartbeats, or every worker has registered in Redis."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if setup.coordinator == "queued":
            beats = instance.get_daemon_heartbeats()
            if "QUEUED_RUN_COORDINATOR" in beats:
                return
        else:
            alive = [w for w in instance.run_coordinator.queue.workers() if w.get("alive")]
            if len(alive) >= setup.workers:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{setup.name}: not ready after {timeout_s:.0f}s")


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send fd 1 to stderr for the block: the code servers this process starts inherit it and
    log there, and stdout is kept for the table."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def tail(paths: list[Path], lines: int = 30) -> None:
    for path in paths:
        if path.exists():
            say(f"--- last lines of {path.name} ---")
            for line in path.read_text(errors="replace").splitlines()[-lines:]:
                print("    " + line, file=sys.stderr)


# -- Dagster ------------------------------------------------------------------------------


def stop_instigators(instance: Any, repo: Any) -> None:
    """Stop the location's sensors and schedules (they are RUNNING by default)."""
    for sensor in repo.get_sensors():
        instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)
    for schedule in repo.get_schedules():
        instance.stop_schedule(schedule.get_remote_origin_id(), schedule.selector_id, schedule)


def submit(instance: Any, workspace: Any, target: tuple[Any, Any, Any], config: dict) -> str:
    from dagster._cli.job import _create_run

    location, repo, job = target
    run = _create_run(
        instance=instance, code_location=location, remote_repo=repo, remote_job=job,
        run_config=config, tags=None, op_selection=None, run_id=None,
    )  # fmt: skip
    instance.submit_run(run.run_id, workspace)
    return str(run.run_id)


def wait_all(instance: Any, run_ids: list[str], timeout_s: float, logs: list[Path]) -> float:
    """Poll until every run is SUCCESS; the time.monotonic() at which that was seen."""
    from dagster._core.storage.dagster_run import RunsFilter

    deadline = time.monotonic() + timeout_s
    while True:
        runs = instance.get_runs(RunsFilter(run_ids=run_ids))
        statuses = {r.run_id: r.status.value for r in runs}
        done = sum(1 for s in statuses.values() if s == "SUCCESS")
        if done == len(run_ids):
            return time.monotonic()
        bad = {rid: s for rid, s in statuses.items() if s in FAILED}
        if bad:
            tail(logs)
            raise RuntimeError(f"runs ended badly: {bad}")
        if time.monotonic() > deadline:
            tail(logs)
            left = {rid: s for rid, s in statuses.items() if s != "SUCCESS"}
            raise RuntimeError(f"{len(left)} run(s) not SUCCESS after {timeout_s:.0f}s: {left}")
        time.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def measure(setup: Setup, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from dagster import DagsterInstance
    from dagster._cli.workspace.cli_target import (
        get_code_location_from_workspace,
        get_remote_job_from_remote_repo,
        get_remote_repository_from_code_location,
    )
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    tag = uuid.uuid4().hex[:8]
    home = work / setup.name
    home.mkdir()
    saved_env = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "GOV_PIPELINE_DATABASE_URL")}
    with ExitStack() as stack:
        storage_url = stack.enter_context(database(args.postgres_url, f"gov_bench_dagster_{tag}"))
        app_url = stack.enter_context(database(args.postgres_url, f"gov_bench_app_{tag}"))
        prefix = stack.enter_context(redis_prefix(args.redis_url, f"gov_bench_{tag}"))
        (home / "dagster.yaml").write_text(
            instance_yaml(setup, storage_url, args.redis_url, prefix)
        )
        workflow, policy_id = seed_app_db(app_url)
        settings = replace(load_settings(), database_url=app_url, home=home / "gov_home")
        env = dagster_env(settings, home)
        # The in-process code server (for create_run) inherits this process's environment.
        os.environ["DAGSTER_HOME"] = str(home)
        os.environ["GOV_PIPELINE_DATABASE_URL"] = app_url

        @stack.callback
        def _restore_env() -> None:
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

        prepare_instance(home)
        instance = stack.enter_context(DagsterInstance.from_config(str(home)))
        say(f"{setup.name}: opening the code location")
        wpc = stack.enter_context(
            WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(WORKSPACE)]))
        )
        workspace = wpc.create_request_context()
        location = get_code_location_from_workspace(workspace, None)
        repo = get_remote_repository_from_code_location(location, None)
        job = get_remote_job_from_remote_repo(repo, JOB)
        stop_instigators(instance, repo)
        target = (location, repo, job)
        config = {
            "ops": {
                "run_workflow": {
                    "config": {"tenant_id": TENANT, "workflow": workflow, "entity_id": policy_id}
                }
            }
        }

        say(f"{setup.name}: starting {'the daemon' if setup.workers == 0 else 'the workers'}")
        logs = stack.enter_context(processes(setup, env, work))
        try:
            wait_ready(setup, instance, args.timeout)
        except RuntimeError:
            tail(logs)
            raise
        time.sleep(args.settle)
        for i in range(args.warmup):
            say(f"{setup.name}: warm-up run {i + 1}/{args.warmup}")
            wait_all(instance, [submit(instance, workspace, target, config)], args.timeout, logs)

        say(f"{setup.name}: submitting {args.runs} runs")
        run_ids: list[str] = []
        t_start = time.monotonic()
        wall_start = time.time()
        for _ in range(args.runs):
            run_ids.append(submit(instance, workspace, target, config))
        t_submitted = time.monotonic()
        t_done = wait_all(instance, run_ids, args.timeout, logs)
        total = t_done - t_start
        stats = [instance.get_run_stats(run_id) for run_id in run_ids]
        latency = [s.end_time - s.enqueued_time for s in stats]
        to_start = [s.start_time - s.enqueued_time for s in stats]
        last_end = max(s.end_time for s in stats)
        say(f"{setup.name}: {args.runs} runs SUCCESS in {total:.2f}s")
        return {
            "configuration": setup.name,
            "runs": args.runs,
            "submit_s": t_submitted - t_start,
            "total_s": total,
            "total_by_events_s": last_end - wall_start,
            "runs_per_s": args.runs / total,
            "latency_p50_s": percentile(latency, 50),
            "latency_max_s": max(latency),
            "enqueued_to_start_p50_s": percentile(to_start, 50),
            "enqueued_to_start_max_s": max(to_start),
        }


def print_table(results: list[dict[str, Any]]) -> None:
    base = next((r for r in results if r["configuration"] == "dagster-queued"), None)
    print(
        f"{'configuration':18} {'N':>4} {'submit s':>9} {'total s':>8} {'runs/s':>7} "
        f"{'p50 lat s':>10} {'max lat s':>10} {'vs queued':>10}"
    )
    for r in results:
        ratio = f"{r['runs_per_s'] / base['runs_per_s']:9.2f}x" if base else f"{'-':>10}"
        print(
            f"{r['configuration']:18} {r['runs']:4d} {r['submit_s']:9.2f} {r['total_s']:8.2f} "
            f"{r['runs_per_s']:7.2f} {r['latency_p50_s']:10.2f} {r['latency_max_s']:10.2f} "
            f"{ratio}"
        )
    print(
        "latency = end_time - enqueued_time (Dagster run stats); total = first submit to "
        "every run SUCCESS (polled); submit = creating and submitting the N runs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated subset of {', '.join(CONFIGS)}")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed runs per configuration before the timed batch")  # fmt: skip
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds to wait after the daemon/workers are up")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/test",
        help="server to create the benchmark databases on",
    )  # fmt: skip
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep-logs", type=Path, help="copy the process logs here")
    args = parser.parse_args()
    chosen = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(chosen) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configuration(s): {sorted(unknown)}")

    results: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="gov_bench_throughput_"))
    try:
        with stdout_to_stderr():
            for name in chosen:
                results.append(measure(SETUPS[name], args, work))
    finally:
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in work.glob("*.log"):
                shutil.copy(log, args.keep_logs / log.name)
        shutil.rmtree(work, ignore_errors=True)

    print(f"coordinator throughput: {JOB} x {args.runs}, {os.cpu_count()} CPUs")
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"runs": args.runs, "warmup": args.warmup, "cpus": os.cpu_count(),
                   "results": results}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
