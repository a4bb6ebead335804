"""The soak: many changes through the whole stack (daemon, three workers) while a worker
is killed with SIGKILL at random intervals and restarted; at the end the invariant checker
must report nothing lost and nothing duplicated.

    python -m gov_pipeline_tests.reliability.soak --changes 20000 --workers 3   (make soak)

It creates its own databases (application and Dagster storage, on GOV_TEST_POSTGRES_URL's
server) and Redis key prefix, and removes them afterwards.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from gov_pipeline.db.migrate import upgrade
from gov_pipeline_tests.conftest import ADMIN_URL, REDIS_URL, own_redis_prefix
from gov_pipeline_tests.reliability.support import Stack, record, running_stack, wait_for


def _create_databases(tag: str) -> tuple[str, str]:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = (f"gov_soak_{tag}", f"gov_soak_{tag}_dagster")
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    base = make_url(ADMIN_URL)
    app, storage = (base.set(database=n).render_as_string(hide_password=False) for n in names)
    return app, storage


def _drop_databases(tag: str) -> None:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in (f"gov_soak_{tag}", f"gov_soak_{tag}_dagster"):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _unrecovered(s: Stack, run_id: str) -> dict[str, Any]:
    """What became of a run failed by a kill whose retry did not succeed: its run group
    and the engine events Dagster's retry daemon left on it."""
    run = s.c.instance.get_run_by_id(run_id)
    assert run is not None
    root = run.tags.get("dagster/root_run_id") or run_id
    group = [
        {"run": r.run_id[:8], "status": r.status.value,
         "tags": {k: v for k, v in r.tags.items() if "retry" in k or k.startswith("gov/")}}
        for r in s.c.instance.get_runs()
        if r.run_id == root or r.tags.get("dagster/root_run_id") == root
    ]  # fmt: skip
    events = [e.message for e in s.c.instance.all_logs(run_id) if e.is_dagster_event][-6:]
    return {"run": run_id[:8], "group": group, "events": events}


def _recoveries(s: Stack, failed: list[str], kill_times: list[float]) -> list[float]:
    """Per run failed by a kill: seconds from the kill to the end of the retry that
    succeeded (retries of retries followed through `dagster/root_run_id`)."""
    runs = s.c.instance.get_runs()
    out = []
    for run_id in failed:
        run = s.c.instance.get_run_by_id(run_id)
        assert run is not None
        root = run.tags.get("dagster/root_run_id") or run_id
        ended = s.c.instance.get_run_stats(run_id).end_time or time.time()
        kill = max((t for t in kill_times if t <= ended), default=None)
        done = [
            s.c.instance.get_run_stats(r.run_id).end_time or 0.0
            for r in runs
            if r.tags.get("dagster/root_run_id") == root and r.status.value == "SUCCESS"
        ]
        if kill is not None and done:
            out.append(round(max(done) - kill, 1))
    return out


def _busy(s: Stack, alive: list[str]) -> list[str]:
    """The workers (by name) holding a STARTED processing run right now."""
    queue = s.c.instance.run_coordinator.queue
    holders = {
        queue.record(r.run_id).get("worker", "")
        for r in s.c.instance.get_runs(limit=50)
        if r.status.value == "STARTED"
    }
    return [n for n in alive if any(h.endswith(f":{s.workers[n].pid}") for h in holders)]


def _failed_by_run_failure(s: Stack) -> int:
    """Executions the run failure sensor failed: their run died once more than run retries
    allow. Their changes are processed; `gov-pipeline executions retry` runs them."""
    from sqlalchemy import func, select

    from gov_pipeline.db.models import WorkflowExecution

    with s.sessions.begin() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(WorkflowExecution)
                .where(
                    WorkflowExecution.status == "failed",
                    WorkflowExecution.error.like("Dagster run % failed%"),
                )
            )
            or 0
        )


def run_soak(
    changes: int,
    *,
    workers: int = 3,
    policies: int = 200,
    max_kills: int | None = None,
    kill_every: tuple[float, float] = (15.0, 45.0),
    per_transaction: int = 20,
    batch_size: int = 200,
    seed: int | None = None,
    timeout_s: float = 7200,
    say: Callable[[str], None] = print,
    name: str = "soak",
) -> dict[str, Any]:
    """Write `changes` policy updates while killing a random worker every `kill_every`
    seconds (at most `max_kills` times); returns the figures, checker included."""
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="gov-soak-"))
    app_url, storage_url = _create_databases(tag)
    try:
        upgrade(app_url)
        with (
            own_redis_prefix() as prefix,
            running_stack(
                workdir, app_url, storage_url, REDIS_URL, prefix, workers=workers,
                policies_n=policies, env={"GOV_PIPELINE_BATCH_SIZE": str(batch_size)},
            ) as s,
        ):  # fmt: skip
            started = time.monotonic()
            failed: list[BaseException] = []

            def write() -> None:
                try:
                    step = 500
                    for done in range(0, changes, step):
                        s.write_updates(min(step, changes - done), per_transaction)
                except BaseException as exc:  # reported by the main thread
                    failed.append(exc)

            writer = threading.Thread(target=write, name="soak-writer", daemon=True)
            writer.start()
            kills: list[dict[str, Any]] = []
            deadline = started + timeout_s
            while time.monotonic() < deadline and not failed:
                if max_kills is not None and len(kills) >= max_kills:
                    break
                if not writer.is_alive() and s.settled():
                    break
                time.sleep(rng.uniform(*kill_every))  # the fault's schedule, not a wait
                alive = [n for n, p in s.workers.items() if p.poll() is None]
                busy_workers = _busy(s, alive)
                victim = rng.choice(busy_workers or alive)  # mid-run when a run is going
                busy = s.running_runs()
                s.kill_worker(victim)
                replacement = f"{victim.split('~')[0]}~{len(kills) + 1}"
                s.start_worker(replacement)
                kills.append({"at_s": round(time.monotonic() - started, 1), "worker": victim,
                              "runs_started_then": busy, "t": time.time()})  # fmt: skip
                say(f"  kill {len(kills)} at {kills[-1]['at_s']}s: {victim} -> {replacement}")
            writer.join(timeout=max(1.0, deadline - time.monotonic()))
            if failed:
                raise failed[0]
            last_kill = started + (kills[-1]["at_s"] if kills else 0.0)
            wait_for(s.settled, max(60.0, deadline - time.monotonic()), "the soak to settle", 1.0)
            settled_at = time.monotonic()
            report = s.check()
            runs = s.c.instance.get_runs()
            failed_by_kill = [
                r.run_id
                for r in runs
                if r.status.value == "FAILURE"
                and any(
                    "died while executing this run" in (e.message or "")
                    for e in s.c.instance.all_logs(r.run_id)
                )
            ]
            recoveries = _recoveries(s, failed_by_kill, [k["t"] for k in kills])
            out_of_retries = _failed_by_run_failure(s)
            wall = settled_at - started
            figures = record(
                "soak: worker SIGKILL at random intervals", name, s, report,
                max(recoveries, default=None), kills=len(kills), kill_log=kills,
                runs_failed_by_kills=len(failed_by_kill), runs_recovered=len(recoveries),
                unrecovered=[] if len(recoveries) == len(failed_by_kill)
                else [_unrecovered(s, r) for r in failed_by_kill],
                recovery_median_s=round(statistics.median(recoveries), 1) if recoveries else None,
                settled_after_last_kill_s=round(settled_at - last_kill, 1),
                notices_completed=s.completed_notices(), workers=workers,
                executions_failed_with_their_run=out_of_retries,
                throughput_changes_per_s=round(s.updates / wall, 1),
                report_ok=report.ok, violations=report.summary(),
            )  # fmt: skip
            figures["wall_s"] = round(wall, 1)
            return figures
    finally:
        _drop_databases(tag)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--kill-min", type=float, default=15.0, help="seconds between kills, min")
    parser.add_argument("--kill-max", type=float, default=45.0, help="seconds between kills, max")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    print(f"soak: {args.changes} changes, {args.workers} workers, a worker killed every "
          f"{args.kill_min:.0f}-{args.kill_max:.0f} s")  # fmt: skip
    figures = run_soak(
        args.changes, workers=args.workers, policies=args.policies,
        kill_every=(args.kill_min, args.kill_max), seed=args.seed,
    )  # fmt: skip
    print(
        f"changes {figures['changes']} (updates {figures['updates']}), executions "
        f"{figures['executions']} {figures['executions_by_status']}\n"
        f"runs {sum(figures['runs_by_status'].values())} {figures['runs_by_status']}\n"
        f"kills {figures['kills']}, runs failed by kills {figures['runs_failed_by_kills']}, "
        f"recovered {figures['runs_recovered']} (kill to retry done: median "
        f"{figures['recovery_median_s']} s, max {figures['recovery_s']} s)\n"
        f"lost {figures['lost']}, duplicated {figures['duplicated']}\n"
        f"wall {figures['wall_s']} s, throughput {figures['throughput_changes_per_s']} changes/s"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True))
    deferred = figures["executions_failed_with_their_run"]
    if deferred:
        print(f"{deferred} execution(s) failed with their run after run retries were used up "
              "(killed again and again): their changes are processed, their effects wait for "
              "gov-pipeline executions retry")  # fmt: skip
    accounted = figures["notices_completed"] + deferred
    if not figures["report_ok"] or accounted != figures["updates"]:
        print(f"FAILED: {figures['violations']}; {figures['notices_completed']} of "
              f"{figures['updates']} updates ran their workflow", file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
