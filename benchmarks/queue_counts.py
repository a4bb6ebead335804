"""What counting run storage's runs in progress costs the Redis queue.

Usage: python -m benchmarks.queue_counts [--in-progress 0,10,100,1000] [--claims 200]

The limits count every run in progress in Dagster's run storage. The choice made: a worker
copies those runs into Redis every `storage_sync_seconds` (`Worker.sync_storage`, one worker
per interval), and every claim counts them inside its Lua script, so the claim itself never
queries run storage. This prints, for each number of runs in progress in storage that Redis
does not hold: the time of one storage sync, and the median time of a claim (each claim
followed by a release) with them counted; the `per-claim query` column is what a storage
query per claim (the alternative) would add to each claim.

Each size gets a fresh PostgreSQL database and its own Redis key prefix, removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from typing import Any

from dagster import DagsterInstance, DagsterRunStatus, instance_for_test

from benchmarks.coordinator_throughput import database
from gov_pipeline.coordinator.contract import in_progress_runs
from gov_pipeline.coordinator.queue import delete_queue
from gov_pipeline.coordinator.worker import Worker
from gov_pipeline.embedded.instance import WORKSPACE


def overrides(storage_url: str, redis_url: str, prefix: str) -> dict[str, Any]:
    config = {"redis_url": redis_url, "key_prefix": prefix, "max_concurrent_runs": -1}
    return {
        "storage": {"postgres": {"postgres_url": storage_url}},
        "instance_class": {
            "module": "gov_pipeline.coordinator.instance",
            "class": "GovDagsterInstance",
        },
        "run_coordinator": {
            "module": "gov_pipeline.coordinator.run_coordinator",
            "class": "RedisRunCoordinator",
            "config": config,
        },
    }


def stored_runs(instance: DagsterInstance, count: int, status: DagsterRunStatus) -> list[str]:
    from dagster._core.test_utils import create_run_for_test

    tags = {"gov/queue": "policy", "gov/entity": "1"}
    return [
        create_run_for_test(instance, job_name="bench", status=status, tags=tags).run_id
        for _ in range(count)
    ]


def measure(storage_url: str, redis_url: str, in_progress: int, claims: int) -> dict[str, float]:
    prefix = f"govbench:{uuid.uuid4().hex[:8]}"
    try:
        with instance_for_test(overrides=overrides(storage_url, redis_url, prefix)) as instance:
            stored_runs(instance, in_progress, DagsterRunStatus.STARTED)
            worker = Worker(instance, workspace=WORKSPACE, mode="launch")
            started = time.perf_counter()
            worker.sync_storage()
            sync_ms = (time.perf_counter() - started) * 1000
            queue = worker.queue
            for i in range(claims):
                queue.enqueue(f"r{i}", lane="notification", priority=0, order=None, tags={})
            times = []
            for _ in range(claims):
                started = time.perf_counter()
                lease = queue.claim(worker.worker_id, [], 30)
                times.append((time.perf_counter() - started) * 1000)
                assert lease is not None
                queue.release(lease.run_id, "SUCCESS", 60, token=lease.token)
            started = time.perf_counter()
            for _ in range(20):
                in_progress_runs(instance)
            query_ms = (time.perf_counter() - started) * 1000 / 20
        return {"sync_ms": sync_ms, "claim_ms": statistics.median(times), "query_ms": query_ms}
    finally:
        delete_queue(redis_url, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-progress", default="0,10,100,1000")
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/test"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    sizes = [int(n) for n in args.in_progress.split(",")]
    print(f"{'in progress':>12} {'sync ms':>9} {'claim ms':>9} {'per-claim query ms':>19}")
    for size in sizes:
        name = f"gov_bench_counts_{uuid.uuid4().hex[:8]}"
        with database(args.postgres_url, name) as url:
            row = measure(url, args.redis_url, size, args.claims)
        print(f"{size:>12} {row['sync_ms']:>9.1f} {row['claim_ms']:>9.2f} {row['query_ms']:>19.1f}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
