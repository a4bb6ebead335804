"""A worker ends the runs it holds when they must end: a terminate from the UI of a run
executing inside a real `gov-pipeline worker --mode execute` process, and a run over its
lane's time (`lane_rules` in dagster.yaml), in execute and launch mode. Each time the
worker goes on to run the next run. Real Redis, real PostgreSQL storage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterRunStatus
from sqlalchemy import func, select

from gov_pipeline.coordinator.worker import run_process_pid
from gov_pipeline.db.engine import make_engine, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS
from gov_pipeline.db.models import Policy
from gov_pipeline.domain.lanes import ATTEMPTS_TAG, BACKOFF_TAG, TIMED_OUT_TAG, TIMEOUT_TAG
from gov_pipeline.embedded.processes import bin_path, running_daemon, running_process
from gov_pipeline_tests.integration.coordinator_support import (
    Coordinated,
    slow_import,
    statuses,
    wait_for,
)
from gov_pipeline_tests.reliability.support import RUN_RETRIES

pytestmark = pytest.mark.redis

# What the UI's terminate mutation accepts (dagster_graphql terminate_pipeline_execution:
# CANCELABLE_RUN_STATUSES); it then calls the run coordinator's cancel_run.
CANCELABLE = (DagsterRunStatus.STARTED, DagsterRunStatus.QUEUED)


def terminate_as_the_ui_does(c: Coordinated, run_id: str) -> bool:
    run = c.instance.get_run_by_id(run_id)
    assert run is not None and run.status in CANCELABLE, run
    return bool(c.instance.run_coordinator.cancel_run(run_id))


@contextmanager
def execute_worker(c: Coordinated, name: str) -> Iterator[Callable[[], str]]:
    """A real `gov-pipeline worker --mode execute --burst` process (drains, then exits);
    yields `finish()`, which waits for it to exit 0 and returns its output."""
    log_path = c.home.parent / f"worker-{name}.log"
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [bin_path("gov-pipeline"), "worker", "--mode", "execute", "--burst",
             "--worker-id", name],
            env=c.env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

        def finish() -> str:
            worker.wait(timeout=180)
            out = log_path.read_text()
            assert worker.returncode == 0, out[-3000:]
            return out

        try:
            yield finish
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)


def policies_in(c: Coordinated) -> int:
    engine = make_engine(c.env["GOV_PIPELINE_DATABASE_URL"])
    try:
        with make_sessionmaker(engine, tenant=ALL_TENANTS).begin() as session:
            return int(session.scalar(select(func.count()).select_from(Policy)) or 0)
    finally:
        engine.dispose()


def messages(c: Coordinated, run_id: str) -> list[str]:
    return [e.message for e in c.instance.all_logs(run_id) if e.message]


def seconds_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    wait_for(predicate, timeout_s, what)
    return time.monotonic() - started


def test_terminate_from_the_ui_stops_a_run_inside_an_execute_mode_worker(
    make_coordinated: Callable[..., Coordinated], tmp_path: Path
) -> None:
    c = make_coordinated()
    slow, quick = c.submit([slow_import(c, tmp_path, rows=200_000), ("execute_workflow",
                            c.config(), {})])  # fmt: skip
    with execute_worker(c, "warm") as finish:
        wait_for(lambda: statuses(c, [slow]) == ["STARTED"], 120, "the slow run to start")
        time.sleep(1.0)  # well inside its first op
        assert terminate_as_the_ui_does(c, slow) is True  # the UI says TerminateRunSuccess
        took = seconds_until(lambda: statuses(c, [slow]) == ["CANCELED"], 15, "CANCELED")
        out = finish()
    assert took < 5, f"the run took {took:.1f}s to end CANCELED"
    # The worker went on with the next run, and says how each ended.
    assert statuses(c, [slow, quick]) == ["CANCELED", "SUCCESS"]
    assert "2 claimed, 2 finished" in out and "'CANCELED': 1" in out, out[-2000:]
    assert policies_in(c) < 1 + 200_000  # the import was stopped part-way (1: the fixture's)
    logs = messages(c, slow)
    assert any("Terminating: worker warm, executing this run, stops it." in m for m in logs)
    assert not any("Unable to get grpc client" in m for m in logs)
    assert c.instance.run_coordinator.queue.active() == set()
    print(f"terminate -> CANCELED in {took:.2f}s")


def test_a_run_over_its_lanes_time_is_stopped_and_recorded_as_timed_out_execute_mode(
    make_coordinated: Callable[..., Coordinated], tmp_path: Path
) -> None:
    c = make_coordinated(lane_rules={"import": {"timeout_seconds": 3}})
    slow, quick = c.submit([slow_import(c, tmp_path, rows=200_000), ("execute_workflow",
                            c.config(), {})])  # fmt: skip
    run = c.instance.get_run_by_id(slow)
    assert run is not None  # the coordinator gave it the configured rule at submit
    assert run.tags[TIMEOUT_TAG] == "3" and run.tags[ATTEMPTS_TAG] == "3"
    assert run.tags[BACKOFF_TAG] == "none"
    status = subprocess.run(
        [bin_path("gov-pipeline"), "queue", "status", "--json"],
        env=c.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr[-2000:]
    (lane,) = [x for x in json.loads(status.stdout)["lanes"] if x["lane"] == "import"]
    assert (lane["attempts"], lane["backoff"], lane["timeout_s"]) == (3, "none", 3)
    with execute_worker(c, "warm") as finish:
        wait_for(lambda: statuses(c, [slow]) == ["STARTED"], 120, "the slow run to start")
        took = seconds_until(lambda: statuses(c, [slow]) == ["FAILURE"], 30, "the time-out")
        out = finish()
    assert took < 3 + 3, f"failed {took:.1f}s after it started (limit 3 s)"
    _assert_timed_out(c, slow, "worker stopped it")
    assert statuses(c, [quick]) == ["SUCCESS"]
    assert "'FAILURE:timed-out': 1" in out and "'SUCCESS': 1" in out, out[-2000:]
    assert not any("interrupted unexpectedly" in m for m in messages(c, slow))
    print(f"execute mode: FAILURE {took:.2f}s after STARTED")


def test_a_run_over_its_lanes_time_is_stopped_and_recorded_as_timed_out_launch_mode(
    make_coordinated: Callable[..., Coordinated], tmp_path: Path
) -> None:
    c = make_coordinated(lane_rules={"import": {"timeout_seconds": 3}})
    slow, quick = c.submit([slow_import(c, tmp_path, rows=200_000), ("execute_workflow",
                            c.config(), {})])  # fmt: skip
    worker = c.worker(mode="launch", burst=True, worker_id="launcher")
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    thread.start()
    try:
        wait_for(lambda: statuses(c, [slow]) == ["STARTED"], 120, "the slow run to start")
        pid = run_process_pid(c.instance, slow)
        assert pid is not None
        server = _parent(pid)  # the worker's code server
        took = seconds_until(lambda: statuses(c, [slow]) == ["FAILURE"], 40, "the time-out")
    finally:
        thread.join(timeout=180)
    assert not thread.is_alive()
    # The code server goes once its runs are done (it outlives a test otherwise).
    print(
        f"code server gone {seconds_until(lambda: _gone(server), 90, 'the code server'):.1f}s after the worker"
    )
    assert took < 3 + 12, f"failed {took:.1f}s after it started (limit 3 s)"
    _assert_timed_out(c, slow, "Terminating it.")
    assert _gone(pid), "the timed-out run's process is still running"
    assert statuses(c, [quick]) == ["SUCCESS"]
    assert worker.stats.outcomes == {"FAILURE:timed-out": 1, "SUCCESS": 1}
    print(f"launch mode: FAILURE {took:.2f}s after STARTED")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _gone(pid: int) -> bool:
    """The process has exited (its parent, the worker's code server, may not have reaped it
    yet: a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _assert_timed_out(c: Coordinated, run_id: str, how: str) -> None:
    run = c.instance.get_run_by_id(run_id)
    assert run is not None and run.status == DagsterRunStatus.FAILURE
    # Tagged so the Runs page finds it (the value is its own id: a retry copies the tag).
    assert run.tags[TIMED_OUT_TAG] == run_id
    assert run.tags["dagster/max_retries"] == "2"  # the import lane's 3 attempts
    failure = c.instance.get_run_record_by_id(run_id)
    assert failure is not None
    logs = messages(c, run_id)
    reason = "Timed out: this run exceeded the import lane's 3 s (gov/timeout_s)"
    assert any(m.startswith(reason) and how in m for m in logs), logs[-10:]
    # The run's failure event says why (the message the UI and the failure sensor show).
    failures = [
        e.message
        for e in c.instance.all_logs(run_id)
        if e.dagster_event is not None and e.dagster_event.event_type_value == "PIPELINE_FAILURE"
    ]
    assert failures and failures[-1].startswith(reason), failures
    record = c.instance.run_coordinator.queue.record(run_id)
    assert record["outcome"] == "FAILURE:timed-out"
    assert c.instance.run_coordinator.queue.active() == set()


@pytest.mark.e2e
def test_a_timed_out_run_is_run_again_by_the_daemons_run_retries_until_its_attempts(
    make_coordinated: Callable[..., Coordinated], tmp_path: Path
) -> None:
    """The daemon (run retries on, as shipped) re-executes a timed-out run, and a worker
    times the retry out too; with 2 attempts there is no third run."""
    c = make_coordinated(lane_rules={"import": {"timeout_seconds": 2, "attempts": 2}})
    home_yaml = c.home / "dagster.yaml"
    home_yaml.write_text(home_yaml.read_text() + RUN_RETRIES)
    worker = [bin_path("gov-pipeline"), "worker", "--mode", "execute", "--worker-id", "warm"]
    first = ""

    def group() -> list[Any]:
        found = c.instance.get_run_group(first)
        return (
            []
            if found is None
            else sorted(found[1], key=lambda r: r.tags.get("dagster/retry_number", "0"))
        )

    def both_failed() -> bool:
        runs = group()
        return len(runs) == 2 and all(r.status == DagsterRunStatus.FAILURE for r in runs)

    with running_daemon(c.env, tmp_path / "daemon.log"):
        # Run retries read failures recorded after their first look (a failure before it
        # is ignored): wait for it.
        wait_for(lambda: "EVENT_LOG_CONSUMER" in c.instance.get_daemon_heartbeats(), 120,
                 "the daemon's run retries to start")  # fmt: skip
        (first,) = c.submit([slow_import(c, tmp_path, rows=200_000)])
        with running_process(worker, c.env, tmp_path / "worker.log"):
            took = seconds_until(both_failed, 240, "the run and its retry to time out")
            time.sleep(12)  # the daemon's next looks: no third run
            runs = group()
    assert len(runs) == 2, runs
    original, retry = runs
    assert original.run_id == first
    assert retry.parent_run_id == first and retry.tags["dagster/retry_number"] == "1"
    for run in runs:
        assert run.tags[TIMED_OUT_TAG] == run.run_id  # each its own, though tags are copied
        reason = "Timed out: this run exceeded the import lane's 2 s"
        assert any(m.startswith(reason) for m in messages(c, run.run_id))
    assert original.tags["dagster/will_retry"] == "true"
    assert retry.tags["dagster/will_retry"] == "false"  # its lane's 2 attempts are used
    print(f"run and retry timed out {took:.1f}s after the first submit")
