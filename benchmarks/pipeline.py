"""End to end, four ways: changes per second and latency from commit to completion.

Usage: python -m benchmarks.pipeline [--burst 10000] [--trickle-s 120] [--stock-burst 60]
       [--per-change-burst 400] [--configs direct,dagster-stock,ours-per-change,ours]
       [--workloads burst,trickle] [--sensor-rows 1000000] [--no-limit] [--json PATH]

The same workload and the same domain code (`benchmarks.sync_floor`'s 20 workflows of domain
work) on PostgreSQL and Redis, through:

- direct:          `gov-pipeline process --sync --follow` in one process (domain work only);
- dagster-stock:   our sensor with one run per change, Dagster's QueuedRunCoordinator and
                   daemon (max 4 concurrent runs), DefaultRunLauncher (a process per run);
- ours-per-change: our sensor with one run per change, the Redis run coordinator and two
                   warm `gov-pipeline worker --mode execute` processes;
- ours:            the default configuration: adaptive batching, Redis, two warm workers;
- limit:           after the direct burst, the rows it produced written straight, with no
                   engine (benchmarks/limit_floor.py): the physical floor, with `vs limit`.

Workloads: a burst (half the changes create policies, then each is moved to in_review,
written in transactions of 100 as fast as the database takes them) and a trickle (one
change per second, creates and moves alternating). The slow configurations get a smaller
burst, as printed. A change's latency is `processed_at - created_at`: from the start of
the transaction that wrote it to the commit of its processed marker, which commits with
its executions' effects. Throughput is the changes processed (those the workflows' actions
cause included) over the time from the first commit to the last completion.

Before the workload, one warm-up change goes through each configuration and is left out
of the figures. Peak RSS is sampled every 0.5 s over each process tree (the daemon with
its code server; each worker; the direct process). Every configuration gets fresh
databases, a fresh DAGSTER_HOME and its own Redis key prefix, removed at the end.

The sensor-scale figure times `entity_change_sensor` reading 200 new changes with 10,000
and then `--sensor-rows` rows in the change table (all captured by the real triggers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.coordinator_throughput import (
    SETUPS,
    database,
    instance_yaml,
    percentile,
    redis_prefix,
    say,
    stdout_to_stderr,
    tail,
)
from benchmarks.limit_floor import limit_row
from benchmarks.sync_floor import TENANT, policy_fields, prepare
from gov_pipeline.config import load_settings
from gov_pipeline.db.engine import make_engine, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS, APP_ROLE
from gov_pipeline.db.migrate import upgrade
from gov_pipeline.embedded.instance import dagster_env
from gov_pipeline.embedded.processes import (
    bin_path,
    running_daemon,
    running_worker,
    stop_process_group,
)
from gov_pipeline.services import policies
from gov_pipeline.services.skips import with_skips
from gov_pipeline.services.workflows import COMPILED

CONFIGS = ("direct", "dagster-stock", "ours-per-change", "ours")
WORKLOADS = ("burst", "trickle")
WORKFLOWS = 20
WRITE_CHUNK = 100
SENSOR_INTERVAL_S = 5
ONE_RUN_PER_CHANGE = {"GOV_PIPELINE_BATCH_THRESHOLD": "1000000000"}
DEFAULT_POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Config:
    name: str
    coordinator: str | None  # None: no Dagster; "queued" or "redis"
    workers: int = 0
    env: dict[str, str] = field(default_factory=dict)


CONFIG_BY_NAME = {
    "direct": Config("direct", None),
    "dagster-stock": Config("dagster-stock", "queued", 0, ONE_RUN_PER_CHANGE),
    "ours-per-change": Config("ours-per-change", "redis", 2, ONE_RUN_PER_CHANGE),
    "ours": Config("ours", "redis", 2),
}


# --- measuring memory -------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    """The process's proportional set size: its private pages, and its share of the pages
    it shares (a forked run shares most of the worker's). Summed over a tree it counts each
    page once, where RSS counts a page shared by parent and fork twice."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return _rss_kb(pid)


class RssSampler:
    """Peak memory of process trees (a root and its descendants), sampled: `peak_mb` sums
    PSS over the tree (what it holds, each page once), `peak_rss_mb` sums RSS (a page shared
    by the worker and a run's fork counted in both)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.roots: dict[str, list[int]] = {}
        self.peak_mb: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}
        # label -> (monotonic time, the largest tree's MB) per sample: RSS over time
        self.series: dict[str, list[tuple[float, float]]] = {}
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, label: str, pid: int) -> None:
        self.roots.setdefault(label, []).append(pid)

    def _sample(self) -> None:
        tree = _children()
        now = time.monotonic()
        for label, roots in list(self.roots.items()):
            largest, largest_rss = 0.0, 0.0
            for root in roots:
                todo, total, rss = [root], 0, 0
                while todo:
                    pid = todo.pop()
                    total += _pss_kb(pid)
                    rss += _rss_kb(pid)
                    todo.extend(tree.get(pid, []))
                # per label: the largest single tree (one worker, the daemon)
                largest = max(largest, total / 1024)
                largest_rss = max(largest_rss, rss / 1024)
            self.peak_mb[label] = max(self.peak_mb.get(label, 0.0), largest)
            self.peak_rss_mb[label] = max(self.peak_rss_mb.get(label, 0.0), largest_rss)
            self.series.setdefault(label, []).append((now, largest))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the workload -----------------------------------------------------------------------


def write_burst(sessions: sessionmaker[Session], n: int) -> None:
    """n/2 imported policies, then each moved to in_review: n changes, 100 per commit."""
    ids: list[int] = []
    importer, reviewer = policies.Actor("importer"), policies.Actor("alice")
    for start in range(0, n // 2, WRITE_CHUNK):
        with sessions.begin() as session:
            for i in range(start, min(start + WRITE_CHUNK, n // 2)):
                created = policies.create_policy(
                    session, tenant_id=TENANT, fields=policy_fields(i), actor=importer
                )
                ids.append(created.id)
    for start in range(0, len(ids), WRITE_CHUNK):
        with sessions.begin() as session:
            for pid in ids[start : start + WRITE_CHUNK]:
                policies.transition_status(
                    session, tenant_id=TENANT, policy_id=pid, to_status="in_review",
                    actor=reviewer,
                )  # fmt: skip


def write_trickle(sessions: sessionmaker[Session], seconds: int, first: int = 100_000) -> None:
    """One change a second: create a policy, move it to in_review, create the next, ..."""
    start = time.monotonic()
    last: int | None = None
    for i in range(seconds):
        time.sleep(max(0.0, start + i - time.monotonic()))
        with sessions.begin() as session:
            if last is None:
                last = policies.create_policy(
                    session, tenant_id=TENANT, fields=policy_fields(first + i),
                    actor=policies.Actor("importer"),
                ).id  # fmt: skip
            else:
                policies.transition_status(
                    session, tenant_id=TENANT, policy_id=last, to_status="in_review",
                    actor=policies.Actor("alice"),
                )  # fmt: skip
                last = None


def max_change_id(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        return int(
            session.execute(text("SELECT coalesce(max(id), 0) FROM entity_changes")).scalar_one()
        )


def outstanding(sessions: sessionmaker[Session], after: int) -> tuple[int, int]:
    """(changes after `after` not processed, executions pending or in progress)."""
    with sessions.begin() as session:
        changes = session.execute(
            text(
                "SELECT count(*) FROM entity_changes c WHERE c.id > :after AND NOT EXISTS "
                "(SELECT 1 FROM processed_changes p WHERE p.change_id = c.id)"
            ),
            {"after": after},
        ).scalar_one()
        busy = session.execute(
            text(
                "SELECT count(*) FROM workflow_executions "
                "WHERE status IN ('pending', 'in_progress')"
            )
        ).scalar_one()
    return int(changes), int(busy)


def wait_processed(
    sessions: sessionmaker[Session], after: int, timeout_s: float, logs: list[Path],
    label: str, progress: list[tuple[float, int]] | None = None,
) -> None:  # fmt: skip
    """Until every change after `after` is processed and no execution is pending.

    Args:
        progress: gets (monotonic time, changes still unprocessed) at every look.
    """
    deadline = time.monotonic() + timeout_s
    shown = 0.0
    while True:
        left, busy = outstanding(sessions, after)
        if progress is not None:
            progress.append((time.monotonic(), left))
        if left == 0 and busy == 0:
            return
        if time.monotonic() > deadline:
            tail(logs)
            raise RuntimeError(f"{label}: {left} change(s) unprocessed after {timeout_s:.0f}s")
        if time.monotonic() - shown > 10:
            say(f"{label}: {left} change(s) to go, {busy} execution(s) pending")
            shown = time.monotonic()
        time.sleep(0.5)


def figures(sessions: sessionmaker[Session], after: int) -> dict[str, Any]:
    with sessions.begin() as session:
        rows = session.execute(
            text(
                "SELECT c.created_at, p.processed_at FROM entity_changes c "
                "JOIN processed_changes p ON p.change_id = c.id WHERE c.id > :after"
            ),
            {"after": after},
        ).all()
        by_status = dict(
            session.execute(
                text(
                    "SELECT status, count(*) FROM workflow_executions e JOIN entity_changes c "
                    "ON c.id = e.change_id WHERE c.id > :after GROUP BY status"
                ),
                {"after": after},
            ).all()
        )
        skipped = session.scalar(
            text("SELECT coalesce(sum(skipped), 0) FROM change_skips WHERE change_id > :after"),
            {"after": after},
        )
        with_skips(by_status, int(skipped or 0))
    latency = [(done - made).total_seconds() for made, done in rows]
    span = (max(d for _, d in rows) - min(m for m, _ in rows)).total_seconds()
    return {
        "changes_processed": len(rows),
        "seconds": span,
        "changes_per_s": len(rows) / span if span > 0 else 0.0,
        "latency_p50_s": percentile(latency, 50),
        "latency_p95_s": percentile(latency, 95),
        "latency_max_s": max(latency),
        "executions": {str(k): int(v) for k, v in by_status.items()},
    }


# --- one configuration, one workload --------------------------------------------------------


@contextmanager
def app_database(admin_url: str, tag: str) -> Iterator[tuple[str, sessionmaker[Session]]]:
    with database(admin_url, f"gov_bench_app_{tag}") as url:
        upgrade(url)
        engine = make_engine(url, role=APP_ROLE)
        try:
            sessions = make_sessionmaker(engine, tenant=ALL_TENANTS)
            COMPILED.clear()
            prepare(sessions, WORKFLOWS)
            yield url, sessions
        finally:
            engine.dispose()


@contextmanager
def pipeline(
    config: Config, app_url: str, args: argparse.Namespace, work: Path, sampler: RssSampler
) -> Iterator[list[Path]]:
    """Start the configuration's processes; yield their log files; stop them."""
    tag = uuid.uuid4().hex[:8]
    home = work / f"{config.name}-{tag}"
    home.mkdir()
    settings = replace(load_settings(), database_url=app_url, home=home / "gov_home")
    extra = {"GOV_PIPELINE_SENSOR_INTERVAL": str(SENSOR_INTERVAL_S), **config.env}
    logs: list[Path] = []
    with ExitStack() as stack:
        if config.coordinator is None:
            env = {**os.environ, "GOV_PIPELINE_DATABASE_URL": app_url, **extra}
            log = home / "direct.log"
            logs.append(log)
            out = stack.enter_context(log.open("ab"))
            process = subprocess.Popen(
                [bin_path("gov-pipeline"), "process", "--sync", "--follow", "--poll", "0.5",
                 "--quiet"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            stack.callback(stop_process_group, process)
            sampler.watch("direct", process.pid)
            yield logs
            return
        storage = stack.enter_context(database(args.postgres_url, f"gov_bench_dagster_{tag}"))
        prefix = stack.enter_context(redis_prefix(args.redis_url, f"gov_bench_{tag}"))
        setup = SETUPS["dagster-queued" if config.coordinator == "queued" else "redis-execute"]
        (home / "dagster.yaml").write_text(instance_yaml(setup, storage, args.redis_url, prefix))
        env = dagster_env(settings, home, extra)
        logs.append(home / "daemon.log")
        daemon = stack.enter_context(running_daemon(env, logs[-1]))
        sampler.watch("daemon", daemon.pid)
        for i in range(config.workers):
            logs.append(home / f"worker-{i}.log")
            worker = stack.enter_context(running_worker(env, logs[-1]))
            sampler.watch("worker", worker.pid)
        yield logs


def run_figures(dagster_home: Path) -> dict[str, Any]:
    """The runs a configuration made: how many, how long they waited and took."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        records = instance.get_run_records()
    waited = [r.start_time - r.create_timestamp.timestamp() for r in records if r.start_time]
    took = [r.end_time - r.start_time for r in records if r.start_time and r.end_time]
    statuses: dict[str, int] = {}
    for record in records:
        name = record.dagster_run.status.value
        statuses[name] = statuses.get(name, 0) + 1
        steps = step_figures(instance, records)
    return {
        "runs": len(records),
        "run_statuses": statuses,
        "run_wait_p50_s": percentile(waited, 50) if waited else None,
        "run_duration_p50_s": percentile(took, 50) if took else None,
        "run_parts_p50_s": steps,
    }


def step_figures(instance: Any, records: Sequence[Any], sample: int = 30) -> dict[str, float]:
    """Where a run's time goes (median over up to `sample` successful runs, from their
    event logs): each op's step, from its start to its success, and the rest of the run
    (process start to the first step, the gaps between steps, the last step to the run's
    end) as `outside steps`."""
    from dagster import DagsterEventType

    parts: dict[str, list[float]] = {}
    done = [r for r in records if r.dagster_run.status.value == "SUCCESS" and r.end_time]
    for record in done[:sample]:
        started: dict[str, float] = {}
        in_steps = 0.0
        # Only the step events: a governance run's materializations carry large metadata.
        wanted = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}
        connection = instance.get_records_for_run(record.dagster_run.run_id, of_type=wanted)
        for entry in (r.event_log_entry for r in connection.records):
            event = entry.dagster_event
            if event is None or event.step_key is None:
                continue
            if event.event_type == DagsterEventType.STEP_START:
                started[event.step_key] = entry.timestamp
            elif event.event_type == DagsterEventType.STEP_SUCCESS and event.step_key in started:
                took = entry.timestamp - started[event.step_key]
                parts.setdefault(event.step_key, []).append(took)
                in_steps += took
        if record.start_time:
            total = record.end_time - record.start_time
            parts.setdefault("outside steps", []).append(total - in_steps)
    return {name: percentile(values, 50) for name, values in parts.items()}


def measure(
    config: Config, workload: str, n: int, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    label = f"{workload}/{config.name}"
    with (
        app_database(args.postgres_url, tag) as (app_url, sessions),
        RssSampler() as sampler,
        pipeline(config, app_url, args, work, sampler) as logs,
    ):
        say(f"{label}: warming up (one change through the pipeline)")
        with sessions.begin() as session:
            policies.create_policy(
                session, tenant_id=TENANT, fields=policy_fields(999_999),
                actor=policies.Actor("importer"),
            )  # fmt: skip
        wait_processed(sessions, 0, args.timeout, logs, label)
        after = max_change_id(sessions)
        sampler.peak_mb.clear()  # the workload's peaks, not start-up's
        sampler.peak_rss_mb.clear()
        say(f"{label}: writing {n if workload == 'burst' else args.trickle_s} change(s)")
        started = time.monotonic()
        if workload == "burst":
            write_burst(sessions, n)
        else:
            write_trickle(sessions, args.trickle_s)
        written = time.monotonic() - started
        progress: list[tuple[float, int]] = []
        wait_processed(sessions, after, args.timeout, logs, label, progress)
        result = figures(sessions, after)
        if workload == "burst" and args.rss_window:
            result["rss_windows"] = rss_windows(sampler, progress, args.rss_window)
            result["rss_window"] = args.rss_window
        if config.coordinator is not None:
            result.update(run_figures(logs[0].parent))
        if config.name == "direct" and workload == "burst" and args.limit:
            say(f"{label}: the limit row (the same rows written straight)")
            result["limit"] = limit_row(args.postgres_url, app_url, after)
    result.update(
        {
            "workload": workload,
            "configuration": config.name,
            "changes_written": n if workload == "burst" else args.trickle_s,
            "write_s": written,
            "peak_pss_mb": {k: round(v, 1) for k, v in sampler.peak_mb.items()},
            "peak_rss_mb": {k: round(v, 1) for k, v in sampler.peak_rss_mb.items()},
        }
    )
    runs = (
        f"; {result['runs']} runs {result['run_statuses']}, p50 wait "
        f"{result['run_wait_p50_s'] or 0:.1f}s, p50 duration "
        f"{result['run_duration_p50_s'] or 0:.1f}s ("
        + ", ".join(f"{k} {v:.2f}s" for k, v in result["run_parts_p50_s"].items())
        + ")"
        if "runs" in result
        else ""
    )
    say(
        f"{label}: {result['changes_processed']} changes in {result['seconds']:.1f}s = "
        f"{result['changes_per_s']:.1f}/s, p50 {result['latency_p50_s']:.1f}s, "
        f"p95 {result['latency_p95_s']:.1f}s{runs}"
    )
    return result


def rss_windows(
    sampler: RssSampler, progress: list[tuple[float, int]], window: int
) -> dict[str, dict[str, float]]:
    """Per process label, the peak RSS while the first `window` changes of the burst were
    processed and while the last `window` were, and their ratio (is memory flat?)."""
    if not progress:
        return {}
    total = max(left for _, left in progress)
    first_end = next((t for t, left in progress if total - left >= window), progress[-1][0])
    last_start = next((t for t, left in progress if left <= window), progress[-1][0])
    found: dict[str, dict[str, float]] = {}
    for label, series in sampler.series.items():
        first = [mb for t, mb in series if progress[0][0] <= t <= first_end]
        last = [mb for t, mb in series if last_start <= t <= progress[-1][0]]
        if first and last:
            found[label] = {
                "first_mb": round(max(first), 1),
                "last_mb": round(max(last), 1),
                "last_vs_first": round(max(last) / max(first), 2),
            }
    return found


# --- the sensor over a large change table ------------------------------------------------------


FILL_SQL = """
INSERT INTO policies (tenant_id, title, policy_type, content, business_units, status, version,
    version_number, tags, custom_fields, requires_acknowledgment, created_at, updated_at)
SELECT :tenant, 'Filler ' || g, 'Operations', '', '[]', 'draft', '1.0', 1, '[]', '{}', false,
    now(), now()
FROM generate_series(1, :rows) AS g
"""


def fill(sessions: sessionmaker[Session], rows: int, step: int = 100_000) -> None:
    """Add `rows` captured changes (created policies), `step` per transaction."""
    done = 0
    while done < rows:
        part = min(step, rows - done)
        with sessions.begin() as session:
            session.execute(text(FILL_SQL), {"tenant": TENANT, "rows": part})
        done += part
        say(f"sensor scale: +{done:,} changes")


def time_sensor(url: str, sessions: sessionmaker[Session], new: int, repeat: int) -> float:
    """Median seconds of one sensor evaluation that finds `new` new changes."""
    import dagster as dg

    from gov_pipeline.config import load_settings
    from gov_pipeline.orchestration.resources import DatabaseResource
    from gov_pipeline.orchestration.sensors import change_sensor
    from gov_pipeline.services.changes import ChangeCursor

    cursor = ChangeCursor(watermark=max_change_id(sessions) - new).encode()
    database_resource = DatabaseResource(url=url)
    entity_change_sensor = change_sensor(load_settings())
    times = []
    with dg.instance_for_test() as instance:
        for _ in range(repeat):
            with dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"database": database_resource}
            ) as context:
                t0 = time.perf_counter()
                result = entity_change_sensor(context)
                times.append(time.perf_counter() - t0)
            assert isinstance(result, dg.SensorResult) and result.run_requests
    return statistics.median(times)


SETTLE_SQL = (
    "UPDATE entity_changes SET created_at = created_at - interval '1 hour' WHERE id > :after",
    "INSERT INTO processed_changes (change_id, tenant_id, processed_by, processed_at) "
    "SELECT id, tenant_id, 'bench', now() FROM entity_changes WHERE id > :after "
    "ON CONFLICT DO NOTHING",
    "ANALYZE",
)


def time_sweeper(url: str, repeat: int) -> float:
    """Median seconds of a sweeper tick in steady state (its cursor kept from a first tick)
    over a table of processed, old changes."""
    import dagster as dg

    from gov_pipeline.config import load_settings
    from gov_pipeline.orchestration.resources import DatabaseResource
    from gov_pipeline.orchestration.sweeper import sweeper_sensor

    unprocessed_change_sweeper = sweeper_sensor(load_settings())
    resources = {"database": DatabaseResource(url=url)}
    times = []
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            first = unprocessed_change_sweeper(context)  # walks the table once
        assert isinstance(first, dg.SensorResult) and not first.run_requests
        for _ in range(repeat):
            with dg.build_sensor_context(
                instance=instance, cursor=first.cursor, resources=resources
            ) as context:
                t0 = time.perf_counter()
                unprocessed_change_sweeper(context)
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sensor_scale(args: argparse.Namespace) -> dict[str, Any]:
    """Both sensors' ticks with 10,000 and with `--sensor-rows` rows in the change table."""
    tag = uuid.uuid4().hex[:8]
    ticks: dict[str, dict[int, float]] = {"change_sensor": {}, "sweeper": {}}
    with app_database(args.postgres_url, tag) as (url, sessions):
        settled = 0
        for rows in (10_000, args.sensor_rows):
            fill(sessions, rows - settled)
            with sessions.begin() as session:
                session.execute(text("ANALYZE"))
            time_sensor(url, sessions, 200, 2)  # warm
            ticks["change_sensor"][rows] = time_sensor(url, sessions, 200, 9)
            with sessions.begin() as session:
                for sql in SETTLE_SQL:
                    session.execute(text(sql), {"after": settled})
            settled = max_change_id(sessions)
            ticks["sweeper"][rows] = time_sweeper(url, 9)
    small, large = 10_000, args.sensor_rows
    result: dict[str, Any] = {"new_changes_per_tick": 200, "rows_small": small, "rows_large": large}
    for name, by_rows in ticks.items():
        result[name] = {
            "tick_small_s": by_rows[small],
            "tick_large_s": by_rows[large],
            "ratio": by_rows[large] / by_rows[small],
        }
        say(f"sensor scale, {name}: {by_rows[small] * 1000:.1f} ms at {small:,} rows, "
            f"{by_rows[large] * 1000:.1f} ms at {large:,} rows")  # fmt: skip
    return result


# --- report ---------------------------------------------------------------------------------


def with_limit(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results with a `limit` row after the direct burst: its rows written straight,
    with no engine (benchmarks/limit_floor.py), the floor the others are compared with."""
    out: list[dict[str, Any]] = []
    for r in results:
        out.append(r)
        limit = r.get("limit")
        if limit:
            out.append({
                "workload": r["workload"], "configuration": "limit",
                "changes_processed": limit["changes"], "seconds": limit["seconds"],
                "changes_per_s": limit["changes_per_s"], "rows_per_s": limit["rows_per_s"],
                "latency_p50_s": 0.0, "latency_p95_s": 0.0, "latency_max_s": 0.0,
                "peak_pss_mb": {},
                "peak_rss_mb": {},
            })  # fmt: skip
    return out


def ratios(results: list[dict[str, Any]]) -> None:
    for workload in WORKLOADS:
        rows = {r["configuration"]: r for r in results if r["workload"] == workload}
        for row in rows.values():
            if "limit" in rows and rows["limit"]["changes_per_s"]:
                row["vs_limit"] = row["changes_per_s"] / rows["limit"]["changes_per_s"]
            for base in ("direct", "dagster-stock"):
                if base in rows and rows[base]["changes_per_s"]:
                    row[f"vs_{base}"] = row["changes_per_s"] / rows[base]["changes_per_s"]


def print_table(results: list[dict[str, Any]], scale: dict[str, Any] | None) -> None:
    header = (
        f"{'workload':8} {'configuration':16} {'changes':>8} {'seconds':>8} {'changes/s':>9} "
        f"{'p50 s':>6} {'p95 s':>6} {'max s':>6} {'worker MB':>9} {'daemon MB':>9} "
        f"{'vs direct':>9} {'vs stock':>9} {'vs limit':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        rss = r["peak_pss_mb"]
        worker = rss.get("worker", rss.get("direct"))
        vs_direct = r.get("vs_direct")
        vs_stock = r.get("vs_dagster-stock")
        vs_limit = r.get("vs_limit")
        print(
            f"{r['workload']:8} {r['configuration']:16} {r['changes_processed']:8d} "
            f"{r['seconds']:8.1f} {r['changes_per_s']:9.1f} {r['latency_p50_s']:6.1f} "
            f"{r['latency_p95_s']:6.1f} {r['latency_max_s']:6.1f} "
            f"{worker if worker is not None else '-':>9} {rss.get('daemon', '-'):>9} "
            f"{f'{vs_direct:.2f}x' if vs_direct else '-':>9} "
            f"{f'{vs_stock:.1f}x' if vs_stock else '-':>9} "
            f"{f'{vs_limit:.3f}x' if vs_limit else '-':>9}"
        )
    print(
        "(changes: processed, those the actions caused included; latency: commit -> "
        "processed; MB: peak memory (PSS) of one worker tree / the direct process, and of the "
        "daemon tree; limit: the direct burst's rows written straight, no engine)"
    )
    for r in results:
        summed = r.get("peak_rss_mb", {}).get("worker")
        if summed is not None:
            print(
                f"{r['workload']}/{r['configuration']} worker tree RSS summed (a run's fork "
                f"counts the pages it shares with the worker again): {summed:.0f} MB"
            )
        for name, w in r.get("rss_windows", {}).items():
            print(
                f"{r['workload']}/{r['configuration']} {name} peak memory: {w['first_mb']:.0f} MB "
                f"over the first {r['rss_window']:,} changes, {w['last_mb']:.0f} MB over the "
                f"last {r['rss_window']:,} ({w['last_vs_first']:.2f}x)"
            )
    if scale:
        for name, what in (
            ("change_sensor", f"change sensor tick reading {scale['new_changes_per_tick']} "
                              "new changes"),
            ("sweeper", "sweeper tick (steady state, nothing stranded)"),
        ):  # fmt: skip
            tick = scale[name]
            print(
                f"{what}: {tick['tick_small_s'] * 1000:.1f} ms over {scale['rows_small']:,} "
                f"change rows, {tick['tick_large_s'] * 1000:.1f} ms over "
                f"{scale['rows_large']:,} ({tick['ratio']:.2f}x)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--burst", type=int, default=10_000, help="burst size (direct, ours)")
    parser.add_argument("--per-change-burst", type=int, default=400,
                        help="burst size for ours-per-change")  # fmt: skip
    parser.add_argument("--stock-burst", type=int, default=60,
                        help="burst size for dagster-stock")  # fmt: skip
    parser.add_argument("--trickle-s", type=int, default=120, help="trickle length, seconds")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--sensor-rows", type=int, default=1_000_000,
                        help="change rows for the sensor-scale figure (0: skip it)")  # fmt: skip
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument(
        "--limit", action=argparse.BooleanOptionalAction, default=True,
        help="after the direct burst, time its rows written straight (the limit row)",
    )  # fmt: skip
    parser.add_argument(
        "--rss-window", type=int, default=10_000,
        help="report peak RSS over the burst's first and last N changes (0: skip)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    configs = [CONFIG_BY_NAME[c] for c in args.configs.split(",") if c]
    workloads = [w for w in args.workloads.split(",") if w]
    sizes = {"dagster-stock": args.stock_burst, "ours-per-change": args.per_change_burst}
    results: list[dict[str, Any]] = []
    with TemporaryDirectory(prefix="gov_bench_") as tmp, stdout_to_stderr():
        for workload in workloads:
            for config in configs:
                n = sizes.get(config.name, args.burst)
                results.append(measure(config, workload, n, args, Path(tmp)))
        scale = sensor_scale(args) if args.sensor_rows else None
    results = with_limit(results)
    ratios(results)
    print()
    print(
        f"end to end on PostgreSQL and Redis, {WORKFLOWS} active workflows; burst: "
        f"{args.burst} changes (dagster-stock {args.stock_burst}, ours-per-change "
        f"{args.per_change_burst}); trickle: 1 change/s for {args.trickle_s} s; sensor "
        f"interval {SENSOR_INTERVAL_S} s"
    )
    print_table(results, scale)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"args": {k: v for k, v in vars(args).items() if k != "json"},
                   "results": results, "sensor_scale": scale}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
