"""Processes killed with SIGKILL: a worker in the middle of a run, the daemon in the middle
of a sensor tick. Each ends with the invariant checker and records its figures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gov_pipeline_tests.conftest import REDIS_URL, _truncate_all
from gov_pipeline_tests.reliability.support import (
    assert_clean,
    record,
    running_stack,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def test_worker_sigkill_mid_run(
    tmp_path: Path, postgres_url: str, dagster_storage_url: str, redis_prefix: str
) -> None:
    """Two workers; the one executing a run is killed; its lease expires, the run is failed
    as `worker died`, run retries resubmit it, and a restarted worker finishes the burst."""
    _truncate_all(postgres_url)
    with running_stack(
        tmp_path, postgres_url, dagster_storage_url, REDIS_URL, redis_prefix, workers=2,
        env={"GOV_PIPELINE_BATCH_SIZE": "15"},
    ) as s:  # fmt: skip
        s.write_updates(60)
        queue = s.c.instance.run_coordinator.queue
        killed_runs: list[str] = []
        kill_at = time.monotonic()
        started: list[str] = []

        def a_run_in_a_worker() -> bool:
            started[:] = [
                r.run_id
                for r in s.c.instance.get_runs()
                if r.status.value == "STARTED" and r.job_name == "process_changes"
            ]
            return bool(started)

        for attempt in range(5):
            wait_for(a_run_in_a_worker, 180, "a processing run to start", every=0.05)
            run_id = started[0]
            holder = queue.record(run_id).get("worker", "")
            victim = next((n for n, p in s.workers.items() if holder.endswith(f":{p.pid}")), None)
            if victim is None or s.workers[victim].poll() is not None:
                continue
            kill_at = time.monotonic()
            s.kill_worker(victim)
            s.start_worker(f"w{len(s.workers)}-after-{victim}")
            run = s.c.instance.get_run_by_id(run_id)
            wait_for(
                lambda rid=run_id: (
                    s.c.instance.get_run_by_id(rid).status.value  # type: ignore[union-attr]
                    in ("SUCCESS", "FAILURE")
                ),
                120,
                "the killed run to end",
            )
            run = s.c.instance.get_run_by_id(run_id)
            assert run is not None
            if run.status.value == "FAILURE":
                killed_runs.append(run_id)
                break  # the kill hit a run in flight
            # It finished just before the kill landed: try again on the next run.
            assert attempt < 4, "no kill hit a run in flight"
            s.write_updates(15)
        s.wait_settled(300)
        recovery = time.monotonic() - kill_at
        report = s.check()
        assert_clean(s, report, expected_notices=s.updates)
        logs = [e.message for e in s.c.instance.all_logs(killed_runs[0]) if e.message]
        assert any("died while executing this run" in m for m in logs)
        retries = [
            r for r in s.c.instance.get_runs() if r.tags.get("dagster/parent_run_id") in killed_runs
        ]
        assert retries and all(r.status.value == "SUCCESS" for r in retries)
        record("worker SIGKILL mid-run", "test_worker_sigkill_mid_run", s, report, recovery,
               kills=1, runs_failed_by_kill=len(killed_runs))  # fmt: skip


def test_daemon_sigkill_mid_tick(
    tmp_path: Path, postgres_url: str, dagster_storage_url: str, redis_prefix: str
) -> None:
    """A burst planned as many small runs; the daemon (and its code server) is killed while
    the tick is submitting them; a new daemon resumes the tick or reads the changes again:
    every change is processed, no effect doubled."""
    _truncate_all(postgres_url)
    with running_stack(
        tmp_path, postgres_url, dagster_storage_url, REDIS_URL, redis_prefix, workers=2,
        env={"GOV_PIPELINE_BATCH_SIZE": "2"},
    ) as s:  # fmt: skip
        s.write_updates(36)  # ~18 runs of 2 changes: the tick takes seconds to submit them
        wait_for(lambda: len(s.c.instance.get_runs()) > 0, 180, "the tick to submit", 0.05)
        s.kill_daemon()
        kill_at = time.monotonic()
        submitted = len(s.c.instance.get_runs())
        s.start_daemon()
        s.wait_settled(300)
        recovery = time.monotonic() - kill_at
        report = s.check()
        assert_clean(s, report, expected_notices=s.updates)
        keys = [r.tags.get("dagster/run_key") for r in s.c.instance.get_runs()]
        assert 0 < submitted < len(keys), (submitted, len(keys))  # killed mid-submission
        record("daemon SIGKILL mid-tick", "test_daemon_sigkill_mid_tick", s, report, recovery,
               runs_when_killed=submitted,
               duplicate_run_keys=len(keys) - len(set(keys)))  # fmt: skip
