"""The Redis run coordinator and worker against real Redis and a real Dagster instance
(PostgreSQL storage): submit -> QUEUED -> worker -> SUCCESS, limits, priority, per-policy
order, cancel, terminate, crash recovery, Redis flushed, Redis down at submit."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from dagster import DagsterRunStatus

from gov_pipeline.cli.queue import worker_summary
from gov_pipeline.coordinator.worker import run_process_pid
from gov_pipeline.db.engine import make_engine, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS, APP_ROLE
from gov_pipeline.db.models import RunFence
from gov_pipeline.domain.errors import RunFencedError
from gov_pipeline.embedded.instance import WORKSPACE
from gov_pipeline.embedded.processes import bin_path
from gov_pipeline.services.run_fences import fence_run, refuse_if_fenced
from gov_pipeline_tests.conftest import REDIS_URL, RedisServer
from gov_pipeline_tests.integration.coordinator_support import (
    Coordinated,
    slow_import,
    statuses,
    wait_for,
)

pytestmark = pytest.mark.redis


def test_submit_queues_in_redis_and_a_worker_runs_it(make_coordinated) -> None:  # type: ignore[no-untyped-def]
    c = make_coordinated()
    ids = c.submit([("execute_workflow", c.config(), {"gov/entity": "1"})] * 2)
    assert statuses(c, ids) == ["QUEUED", "QUEUED"]
    queue = c.instance.run_coordinator.queue
    assert queue.queued("policy") == ids
    # `dagster job launch` goes through the same coordinator.
    launched = subprocess.run(
        [bin_path("dagster"), "job", "launch", "-w", str(WORKSPACE), "-j", "execute_workflow",
         "--config-json", json.dumps(c.config())],
        env=c.env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-2000:]
    runs = c.instance.get_runs()
    assert len(runs) == 3 and len(queue.queued("policy")) == 3
    stats = c.worker(mode="execute").run(install_signals=False)
    assert stats.outcomes == {"SUCCESS": 3}
    assert {r.status for r in c.instance.get_runs()} == {DagsterRunStatus.SUCCESS}
    record = queue.record(ids[0])
    assert (
        record["state"] == "finished"
        and record["outcome"] == "SUCCESS"
        and record["attempts"] == "1"
    )
    for stamp in ("queued_at", "claimed_at", "started_at", "finished_at"):
        assert float(record[stamp]) > 0
    assert float(record["queued_at"]) <= float(record["claimed_at"]) <= float(record["finished_at"])
    assert queue.active() == set() and queue.queued("policy") == []


def test_launch_mode_hands_runs_to_the_run_launcher(make_coordinated) -> None:  # type: ignore[no-untyped-def]
    c = make_coordinated()
    ids = c.submit([("execute_workflow", c.config(), {})])
    stats = c.worker(mode="launch").run(install_signals=False)
    assert stats.outcomes == {"SUCCESS": 1}
    run = c.instance.get_run_by_id(ids[0])
    assert run is not None and ".dagster/grpc_info" in run.tags  # launched by DefaultRunLauncher


def _intervals(c: Coordinated, ids: list[str]) -> list[tuple[float, float]]:
    out = []
    for run_id in ids:
        stats = c.instance.get_run_stats(run_id)
        out.append((float(stats.start_time or 0), float(stats.end_time or 0)))
    return out


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


def test_never_more_running_than_the_limits_allow(make_coordinated) -> None:  # type: ignore[no-untyped-def]
    c = make_coordinated(max_concurrent_runs=2)
    ids = c.submit([("execute_workflow", c.config(), {"gov/entity": str(i)}) for i in range(5)])
    c.run_workers([c.worker(mode="launch", concurrency=3, worker_id=f"w{i}") for i in range(2)])
    assert set(statuses(c, ids)) == {"SUCCESS"}
    intervals = _intervals(c, ids)
    assert _max_overlap(intervals) <= 2
    # A lane limit of 1 (the audit lane): one at a time, whatever the workers offer.
    c2 = make_coordinated(max_concurrent_runs=-1, lanes={"audit": 1})
    ids2 = c2.submit(
        [
            ("execute_workflow", c2.config(), {"gov/queue": "audit", "gov/entity": str(i)})
            for i in range(3)
        ]
    )
    c2.run_workers([c2.worker(mode="launch", concurrency=3, worker_id=f"v{i}") for i in range(2)])
    assert set(statuses(c2, ids2)) == {"SUCCESS"}
    assert _max_overlap(_intervals(c2, ids2)) == 1


def test_priority_order_then_submit_order(make_coordinated) -> None:  # type: ignore[no-untyped-def]
    c = make_coordinated(max_concurrent_runs=1)
    jobs = [("execute_workflow", c.config(), {"dagster/priority": p, "gov/entity": str(i)})
            for i, p in enumerate(["0", "0", "5", "-3", "5"])]  # fmt: skip
    ids = c.submit(jobs)
    c.worker(mode="execute").run(install_signals=False)
    started = sorted(ids, key=lambda i: c.instance.get_run_stats(i).start_time or 0)
    assert started == [ids[2], ids[4], ids[0], ids[1], ids[3]]


def test_per_policy_runs_go_one_at_a_time_in_submit_order(make_coordinated) -> None:  # type: ignore[no-untyped-def]
    c = make_coordinated(max_concurrent_runs=-1)
    jobs = [("execute_workflow", c.config(), {"gov/entity": "A" if i % 2 == 0 else "B", "dagster/priority": str(i % 3)})
            for i in range(6)]  # fmt: skip
    ids = c.submit(jobs)
    c.run_workers([c.worker(mode="launch", concurrency=2, worker_id=f"w{i}") for i in range(2)])
    assert set(statuses(c, ids)) == {"SUCCESS"}
    for policy in ("A", "B"):
        mine = [
            i for i, (_, _, tags) in zip(ids, jobs, strict=True) if tags["gov/entity"] == policy
        ]
        intervals = _intervals(c, mine)
        assert _max_overlap(intervals) == 1, policy
        assert [s for s, _ in intervals] == sorted(s for s, _ in intervals), (
            policy
        )  # FIFO despite priority


def test_cancel_a_queued_run(make_coordinated) -> None:  # type: ignore[no-untyped-def]
    c = make_coordinated()
    keep, drop = c.submit([("execute_workflow", c.config(), {"gov/entity": "P"})] * 2)
    assert c.instance.run_coordinator.cancel_run(drop) is True
    assert statuses(c, [drop]) == ["CANCELED"]
    queue = c.instance.run_coordinator.queue
    assert queue.queued("policy") == [keep]
    assert queue.record(drop)["outcome"] == "CANCELED"
    c.worker(mode="execute").run(install_signals=False)
    assert statuses(c, [keep, drop]) == ["SUCCESS", "CANCELED"]


def test_terminate_a_running_run(make_coordinated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c = make_coordinated()
    (run_id,) = c.submit([slow_import(c, tmp_path)])
    worker = c.worker(mode="launch", burst=True)
    import threading

    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    thread.start()
    wait_for(lambda: statuses(c, [run_id]) == ["STARTED"], 120, "the run to start")
    assert c.instance.run_coordinator.cancel_run(run_id) is True
    thread.join(timeout=180)
    assert statuses(c, [run_id]) == ["CANCELED"]
    assert c.instance.run_coordinator.queue.active() == set()


def test_a_worker_killed_mid_run_is_recovered(make_coordinated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c = make_coordinated()
    slow, quick = c.submit([slow_import(c, tmp_path), ("execute_workflow", c.config(), {})])
    victim = subprocess.Popen(
        [bin_path("gov-pipeline"), "worker", "--mode", "execute", "--worker-id", "victim"],
        env=c.env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: statuses(c, [slow]) == ["STARTED"], 120, "the slow run to start")
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    time.sleep(3.5)  # the lease (3 s) expires
    # A rescuer that cannot fence the run yet (a transaction of it still holds its lock)
    # leaves it to a later pass: not ended, its lease left to expire.
    held_off = c.worker(mode="execute", worker_id="held-off", fence=lambda *_: False)
    assert held_off.run(install_signals=False).recovered == 1
    assert statuses(c, [slow]) == ["STARTED"]
    time.sleep(3.5)
    engine = make_engine(c.env["GOV_PIPELINE_DATABASE_URL"], role=APP_ROLE)
    sessions = make_sessionmaker(engine, tenant=ALL_TENANTS)
    rescuer = c.worker(
        mode="execute", worker_id="rescuer", fence=lambda *a: fence_run(sessions, *a)
    )
    stats = rescuer.run(install_signals=False)
    assert stats.recovered == 1
    assert statuses(c, [slow, quick]) == ["FAILURE", "SUCCESS"]
    logs = [e.message for e in c.instance.all_logs(slow) if e.message]
    assert any("victim died while executing this run" in m for m in logs)
    # Fenced with the rescuer's token before it failed the run: were the victim's process
    # alive on a host cut off from here, none of its transactions would commit any more.
    with sessions.begin() as session:
        fence = session.get(RunFence, slow)
        assert fence is not None and fence.token.startswith("rescuer#")
        assert "victim died while executing this run" in fence.reason
        with pytest.raises(RunFencedError):
            refuse_if_fenced(session, slow)
    engine.dispose()
    # tagged, so the failure sensor leaves its executions to the sweeper
    assert c.instance.get_run_by_id(slow).tags["gov/worker_died"] == slow  # type: ignore[union-attr]
    assert c.instance.run_coordinator.queue.active() == set()


def _rescue(c: Coordinated, before_end: Any = None) -> Any:
    """Run a burst rescuer worker in a thread (a rescuer that watched a run nobody executes
    would never end: fail instead of hanging); `before_end` runs while it works."""
    import threading

    rescuer = c.worker(mode="launch", worker_id="rescuer")
    thread = threading.Thread(target=rescuer.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    if before_end is not None:
        before_end(rescuer)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the rescuer is still watching a run nobody executes"
    return rescuer.stats


def _launched_by_a_victim(
    c: Coordinated, tmp_path: Path, rows: int
) -> tuple[str, subprocess.Popen[bytes], int]:
    """A slow import launched by a launch-mode worker `victim`: (run id, victim, the run's
    process id), once the run has started."""
    (slow,) = c.submit([slow_import(c, tmp_path, rows=rows)])
    victim = subprocess.Popen(
        [bin_path("gov-pipeline"), "worker", "--mode", "launch", "--worker-id", "victim"],
        env=c.env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: statuses(c, [slow]) == ["STARTED"], 120, "the slow run to start")
        pid = run_process_pid(c.instance, slow)
        assert pid is not None
    except BaseException:
        os.killpg(victim.pid, signal.SIGKILL)
        raise
    return slow, victim, pid


def test_an_adopted_run_is_watched_and_ended_when_its_process_dies(
    make_coordinated, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The worker and its code server die, the run's process lives on: another worker
    adopts the run and watches it; when the run's process dies too, nobody else is left to
    notice (the code server would have), and the watcher fails the run."""
    c = make_coordinated()
    slow, victim, pid = _launched_by_a_victim(c, tmp_path, rows=200_000)
    try:
        code_server = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(victim.pid, signal.SIGKILL)  # the worker and its code server, not the run
        victim.wait(timeout=30)
        os.kill(code_server, signal.SIGKILL)
        time.sleep(3.5)  # the lease (3 s) expires

        def while_watching(rescuer: Any) -> None:
            wait_for(lambda: rescuer.stats.recovered == 1, 60, "the rescuer to adopt the run")
            time.sleep(2)
            assert statuses(c, [slow]) == ["STARTED"]  # alive: watched, not failed
            os.kill(pid, signal.SIGKILL)

        stats = _rescue(c, while_watching)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.pid, signal.SIGKILL)  # what is left of the victim's tree
    logs = [e.message for e in c.instance.all_logs(slow) if e.message]
    assert stats.outcomes == {"FAILURE:worker-died": 1}
    assert statuses(c, [slow]) == ["FAILURE"]
    assert any(f"this run's process {pid} died" in m for m in logs)
    assert c.instance.run_coordinator.queue.active() == set()


def test_a_run_on_another_host_that_stops_beating_is_ended_by_any_worker(
    make_coordinated, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A launched run's process beats while it lives (its executor, orchestration/
    heartbeat.py). Its worker dies and the process, on a host no other worker can look at,
    freezes: the rescuer adopts the run and, the beat lapsed for a lease, fences and fails
    it, where before it would have watched it until a timeout."""
    c = make_coordinated()
    queue = c.instance.run_coordinator.queue
    slow, victim, pid = _launched_by_a_victim(c, tmp_path, rows=400_000)
    try:
        wait_for(lambda: queue.record(slow).get("beats") is not None, 30, "the run's beat")
        assert queue.beat_lapsed(slow) is None  # it beats
        code_server = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(pid, signal.SIGSTOP)  # the far host freezes: no beat, no exit
        far = {"host": "a-host-far-away", "beats": f"a-host-far-away pid {pid}"}
        queue.client.hset(queue.keys.run(slow), mapping=far)
        os.kill(victim.pid, signal.SIGKILL)  # the worker and its code server, not the run
        victim.wait(timeout=30)
        os.kill(code_server, signal.SIGKILL)
        wait_for(lambda: queue.beat_lapsed(slow) is not None, 10, "the beat to lapse")
        stats = _rescue(c)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.pid, signal.SIGKILL)
    assert stats.recovered == 1 and stats.outcomes == {"FAILURE:worker-died": 1}
    assert statuses(c, [slow]) == ["FAILURE"]
    logs = [e.message for e in c.instance.all_logs(slow) if e.message]
    assert any(f"pid {pid}) stopped beating for 3 s" in m for m in logs), logs[-5:]
    assert queue.active() == set()


def test_a_runs_beat_counts_only_once_it_has_beaten(redis_prefix: str) -> None:
    """A run that never beat (a job of another code location) is never taken for dead; one
    that beat is, once its key lapses; a beat of a run not in the queue leaves no record."""
    from gov_pipeline.coordinator.queue import QueueLimits, RunQueue
    from gov_pipeline.coordinator.worker import Silence

    queue = RunQueue.from_url(REDIS_URL, redis_prefix, QueueLimits(lanes={"policy": 5}))
    queue.enqueue("r1", lane="policy", priority=0, order=None, tags={})
    assert queue.beat_lapsed("r1") is None
    queue.beat("r1", "h1 pid 7", ttl_s=0.2)
    assert queue.beat_lapsed("r1") is None
    time.sleep(0.3)
    assert queue.beat_lapsed("r1") == "h1 pid 7"
    queue.beat("r1", "h1 pid 7", ttl_s=5)
    assert queue.beat_lapsed("r1") is None
    queue.beat("elsewhere", "h2 pid 8", ttl_s=0.2)
    assert not queue.client.exists(queue.keys.run("elsewhere"))
    queue.client.close()
    silence = Silence(confirm_s=0.2)  # believed only after staying lapsed for confirm_s
    assert silence.confirmed("h1 pid 7") is None
    assert silence.confirmed(None) is None  # it beat again: the count starts over
    assert silence.confirmed("h1 pid 7") is None
    time.sleep(0.25)
    assert silence.confirmed("h1 pid 7") == "h1 pid 7"


def test_a_launched_run_whose_process_died_with_its_worker_is_failed(
    make_coordinated, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Launch mode (the default): the run's process is a child of the worker's code server,
    so killing the worker's process group kills it too. The rescuer must not watch a run
    nobody executes (its slot would be held for ever): it fails it, and retries apply."""
    c = make_coordinated()
    slow, victim, pid = _launched_by_a_victim(c, tmp_path, rows=80_000)
    try:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 30, "the run process to be gone")
    assert statuses(c, [slow]) == ["STARTED"]  # as Dagster alone would leave it
    time.sleep(3.5)  # the lease (3 s) expires
    stats = _rescue(c)
    assert stats.recovered == 1 and stats.outcomes == {"FAILURE:worker-died": 1}
    assert statuses(c, [slow]) == ["FAILURE"]
    logs = [e.message for e in c.instance.all_logs(slow) if e.message]
    assert any(f"worker victim died, and this run's process {pid} with it" in m for m in logs)
    assert c.instance.get_run_by_id(slow).tags["gov/worker_died"] == slow  # type: ignore[union-attr]
    assert c.instance.run_coordinator.queue.active() == set()


def test_a_worker_killed_after_the_last_step_leaves_a_successful_run(make_coordinated) -> None:  # type: ignore[no-untyped-def]
    """The worker died between the run's last step and Dagster's record of the run's end
    (the soak hits this window): the rescuer finds every step succeeded and records the
    run's success; a retry from failure would have nothing to run."""
    c = make_coordinated()
    (model,) = c.submit([("execute_workflow", c.config(), {})])
    c.worker(mode="execute").run(install_signals=False)
    (cut,) = c.submit([("execute_workflow", c.config(), {})])
    queue = c.instance.run_coordinator.queue
    lease = queue.claim("victim", queue.lanes(), lease_s=0.5)
    assert lease is not None and lease.run_id == cut
    assert queue.take(lease, "execute")
    # The victim's events: the model run's, from its start to its last step, not its end.
    for entry in c.instance.all_logs(model):
        kind = entry.dagster_event.event_type_value if entry.dagster_event else None
        if kind in ("PIPELINE_STARTING", "PIPELINE_START") or entry.step_key:
            c.instance.handle_new_event(entry._replace(run_id=cut))
    assert statuses(c, [cut]) == ["STARTED"]
    time.sleep(0.7)  # the victim's lease (0.5 s) expires
    stats = c.worker(mode="execute", worker_id="rescuer").run(install_signals=False)
    assert stats.recovered == 1 and stats.outcomes == {"SUCCESS:worker-died": 1}
    assert statuses(c, [cut]) == ["SUCCESS"]
    logs = [e.message for e in c.instance.all_logs(cut) if e.message]
    assert any("after every step of this run had succeeded; the run is complete" in m for m in logs)
    assert queue.active() == set()


def test_runs_queued_when_redis_is_flushed_still_complete(
    make_coordinated, private_redis: str
) -> None:  # type: ignore[no-untyped-def]
    c = make_coordinated(redis_url=private_redis)
    ids = c.submit([("execute_workflow", c.config(), {"gov/entity": str(i)}) for i in range(3)])
    redis.Redis.from_url(private_redis).flushall()
    stats = c.worker(mode="execute").run(install_signals=False)
    assert (stats.reconciled, stats.requeued, stats.lost, stats.released) == (3, 3, 3, 0)
    assert statuses(c, ids) == ["SUCCESS"] * 3
    assert worker_summary(stats, 1.0) == (
        "worker done in 1.0s: 3 claimed, 3 finished, 0 recovered, "
        "3 requeued (3 after Redis lost them), outcomes {'SUCCESS': 3}"
    )


def test_reconciliation_rebuilds_a_flushed_queue_in_submit_order_page_by_page(
    make_coordinated, private_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from gov_pipeline.coordinator import worker as worker_module

    monkeypatch.setattr(worker_module, "RECONCILE_PAGE", 2)
    c = make_coordinated(redis_url=private_redis)
    ids = c.submit([("execute_workflow", c.config(), {"gov/entity": str(i)}) for i in range(5)])
    redis.Redis.from_url(private_redis).flushall()
    worker = c.worker(mode="execute")
    assert worker.reconcile() == 5
    queue = c.instance.run_coordinator.queue
    assert [run_id for lane in queue.lanes() for run_id in queue.queued(lane)] == ids
    assert worker.reconcile() == 0  # all known now


def test_workers_dead_for_a_retention_period_are_forgotten(make_coordinated) -> None:  # type: ignore[no-untyped-def]
    c = make_coordinated()
    queue = c.instance.run_coordinator.queue

    def beat(worker_id: str, ttl_s: float, seen_s_ago: float = 0.0) -> None:
        queue.heartbeat(worker_id, {"mode": "execute"}, ttl_s=ttl_s)
        info = json.loads(queue.client.hget(queue.keys.workers, worker_id))
        info["last_heartbeat"] = time.time() - seen_s_ago
        queue.client.hset(queue.keys.workers, worker_id, json.dumps(info))

    beat("alive", 60)
    beat("just-died", 0.05)
    beat("long-gone", 0.05, seen_s_ago=2 * 86_400)
    time.sleep(0.1)  # the dead ones' liveness keys expire
    c.worker(mode="execute").reconcile()  # what every worker does every reconcile_every_s
    assert [(w["worker_id"], w["alive"]) for w in queue.workers()] == [
        ("alive", True),
        ("just-died", False),  # still listed: it died within the retention period
    ]
    beat("long-gone", 0.05, seen_s_ago=3_601)
    time.sleep(0.1)
    assert queue.prune_workers(3_600) == ["long-gone"]


def test_redis_down_at_submit_falls_back_to_launching_directly(
    make_coordinated, private_redis: str
) -> None:  # type: ignore[no-untyped-def]
    c = make_coordinated(redis_url=private_redis)
    redis.Redis.from_url(private_redis).shutdown(nosave=True)
    (run_id,) = c.submit([("execute_workflow", c.config(), {})])
    wait_for(lambda: statuses(c, [run_id]) == ["SUCCESS"], 120, "the directly launched run")
    logs = [e.message for e in c.instance.all_logs(run_id) if e.message]
    assert any(
        "Redis unreachable at submit" in m and "launching this run directly" in m for m in logs
    )


def test_redis_down_at_submit_launches_only_within_the_limits(
    make_coordinated, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    """The fallback counts the runs in progress in run storage: with the one slot taken, the
    run stays QUEUED (nothing lost), and a worker puts it in line once Redis is back."""
    from dagster._core.test_utils import create_run_for_test

    c = make_coordinated(redis_url=redis_server.url, max_concurrent_runs=1)
    busy = create_run_for_test(c.instance, job_name="elsewhere", status=DagsterRunStatus.STARTED)
    redis_server.stop()
    (run_id,) = c.submit([("execute_workflow", c.config(), {})])
    assert statuses(c, [run_id]) == ["QUEUED"]
    logs = [e.message for e in c.instance.all_logs(run_id) if e.message]
    assert any("1 runs in progress, max_concurrent_runs is 1" in m and "stays QUEUED" in m
               for m in logs)  # fmt: skip
    redis_server.start()
    c.instance.report_run_failed(busy)  # the slot frees
    c.worker(mode="execute").run(install_signals=False)
    assert statuses(c, [run_id]) == ["SUCCESS"]


def test_redis_down_at_submit_with_fallback_fail_fails_the_run(
    make_coordinated, private_redis: str
) -> None:  # type: ignore[no-untyped-def]
    c = make_coordinated(redis_url=private_redis, fallback="fail")
    redis.Redis.from_url(private_redis).shutdown(nosave=True)
    with pytest.raises(redis.RedisError):
        c.submit([("execute_workflow", c.config(), {})])
    (run,) = c.instance.get_runs()
    assert run.status == DagsterRunStatus.FAILURE


def test_queue_status_pause_resume_and_requeue_from_the_cli(make_coordinated) -> None:  # type: ignore[no-untyped-def]
    c = make_coordinated()
    (run_id,) = c.submit([("execute_workflow", c.config(), {"gov/queue": "audit"})])

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [bin_path("gov-pipeline"), *args],
            env=c.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = cli("queue", "status", "--json")
    assert done.returncode == 0, done.stderr
    audit = next(lane for lane in json.loads(done.stdout)["lanes"] if lane["lane"] == "audit")
    assert (audit["queued"], audit["running"], audit["limit"]) == (1, 0, 1)
    assert cli("queue", "pause", "audit").returncode == 0
    stats = c.worker(mode="execute").run(install_signals=False)
    assert stats.claimed == 0 and statuses(c, [run_id]) == ["QUEUED"]
    c.instance.run_coordinator.queue.client.delete(
        c.instance.run_coordinator.queue.keys.queued("audit")
    )
    assert cli("queue", "requeue", run_id).returncode == 0
    assert cli("queue", "resume", "audit").returncode == 0
    c.worker(mode="execute").run(install_signals=False)
    assert statuses(c, [run_id]) == ["SUCCESS"]
    bad = cli("queue", "requeue", run_id)
    assert bad.returncode == 1 and "only QUEUED runs" in bad.stderr  # a state, not a usage


def test_the_first_sigterm_lets_the_current_run_finish(make_coordinated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c = make_coordinated()
    slow, waiting = c.submit(
        [slow_import(c, tmp_path, rows=6_000), ("execute_workflow", c.config(), {})]
    )
    worker = subprocess.Popen(
        [bin_path("gov-pipeline"), "worker", "--mode", "execute", "--worker-id", "polite"],
        env=c.env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: statuses(c, [slow]) == ["STARTED"], 120, "the slow run to start")
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=180)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    assert worker.returncode == 0, out[-2000:]
    # The run in hand finished; nothing new was claimed after the signal.
    assert statuses(c, [slow, waiting]) == ["SUCCESS", "QUEUED"]
    assert "1 claimed, 1 finished" in out
    assert c.instance.run_coordinator.queue.workers() == []


def test_the_scripts_keep_the_key_layout_and_the_stored_names(redis_prefix: str) -> None:
    """Every key and every stored state or outcome, written by the Lua scripts, spelt out;
    every key carries the prefix as its hash tag, even a prefix holding `%s`."""
    from gov_pipeline.coordinator.queue import QueueLimits, RunQueue

    p = f"{{{redis_prefix}:100%s}}"
    queue = RunQueue.from_url(
        REDIS_URL, f"{redis_prefix}:100%s", QueueLimits(max_concurrent_runs=5, lanes={"policy": 5})
    )
    client = queue.client

    def keys() -> set[str]:
        return {str(k) for k in client.scan_iter(f"{{{redis_prefix}:*", count=1000)}

    def record(run_id: str) -> tuple[str | None, str | None]:
        state, outcome = client.hmget(f"{p}:rq:run:{run_id}", ["state", "outcome"])
        return state, outcome

    assert queue.enqueue("r1", lane="policy", priority=0, order="7", tags={})
    assert queue.enqueue("r2", lane="policy", priority=0, order="7", tags={})
    runs = {f"{p}:rq:run:r1", f"{p}:rq:run:r2"}
    line = {f"{p}:rq:{k}" for k in ("seq", "queued:policy", "order:7", "lanes", "meta", "heads")}
    assert keys() == line | runs
    assert record("r1") == ("queued", None)
    lease = queue.claim("w1", [], 30)
    assert lease is not None and lease.run_id == "r1"
    assert queue.claim("w1", [], 30) is None  # r2 waits for r1: same policy
    held = {f"{p}:rq:{k}" for k in ("active", "lane_active:policy", "leases", "holders")}
    assert keys() == line | held | runs | {f"{p}:rq:fence"}
    assert record("r1") == ("queued", None) and queue.lease_holder("r1") == "w1"
    assert queue.take(lease, "execute") and record("r1") == ("claimed", None)
    assert queue.start(lease) and record("r1") == ("started", None)
    assert not queue.remove_queued("r1", 60)  # started: a cancel terminates it instead
    assert queue.release("r1", "SUCCESS", 60, token=lease.token)
    assert record("r1") == ("finished", "SUCCESS") and queue.active() == set()
    second = queue.claim("w1", [], 30)
    assert second is not None and second.run_id == "r2" and second.token != lease.token
    assert queue.requeue("r2", "test", token=second.token) and record("r2") == ("queued", None)
    assert queue.queued("policy") == ["r2"] and queue.lease_holder("r2") is None
    assert queue.remove_queued("r2", 60) and record("r2") == ("finished", "CANCELED")
    assert keys() == {f"{p}:rq:seq", f"{p}:rq:lanes", f"{p}:rq:fence"} | runs
    queue.heartbeat("w1", {}, ttl_s=5)
    assert {f"{p}:rq:workers", f"{p}:rq:worker:w1"} <= keys()
    client.close()


def test_a_holder_that_lost_its_lease_is_refused_every_step(redis_prefix: str) -> None:
    """Fencing: a worker cut off past its lease comes back after another adopted its run.
    Its token no longer holds the run, so Redis refuses its renewal, its start, its
    release and its requeue (nothing it does frees or takes back the adopter's slot), even
    when the run is held again by a worker of the same id."""
    from gov_pipeline.coordinator.queue import QueueLimits, RunQueue

    queue = RunQueue.from_url(REDIS_URL, redis_prefix, QueueLimits(lanes={"policy": 5}))
    queue.enqueue("r1", lane="policy", priority=0, order=None, tags={})
    late = queue.claim("w1", [], 0.2)
    assert late is not None and queue.take(late, "launch") and queue.start(late)
    assert queue.adopt("r1", "w2", 30) is None  # the lease has not expired yet
    time.sleep(0.3)  # w1 is away past its lease
    adopter = queue.adopt("r1", "w2", 30)
    assert adopter is not None and adopter.token != late.token
    assert queue.lease_holder("r1") == "w2" and queue.lease_token("r1") == adopter.token
    assert not queue.renew(late, 30)
    assert not queue.start(late)
    assert not queue.release("r1", "SUCCESS", 60, token=late.token)
    assert not queue.requeue("r1", "late", token=late.token)
    assert queue.active() == {"r1"} and queue.lease_token("r1") == adopter.token
    # Adopted again by the same worker id: the old token of that id is still refused.
    time.sleep(0.05)
    queue.client.zadd(queue.keys.leases, {"r1": 0})  # the adopter's lease expired too
    again = queue.adopt("r1", "w1", 30)
    assert again is not None and again.worker_id == "w1" and again.token != late.token
    assert not queue.renew(late, 30) and queue.renew(again, 30)
    assert queue.release("r1", "SUCCESS", 60, token=again.token) and queue.active() == set()
    queue.client.close()


def test_a_holder_whose_ended_run_was_released_for_it_is_done_not_refused(
    redis_prefix: str,
) -> None:
    """Another worker's reconciliation finds the run ended in Dagster and frees its slot
    while its holder is still waiting for the run's process to exit (seconds, on a slow
    link): the holder's renewal and release then say done, not "lease lost"; a holder
    whose run was adopted since is still refused."""
    from gov_pipeline.coordinator.queue import QueueLimits, RunQueue

    queue = RunQueue.from_url(REDIS_URL, redis_prefix, QueueLimits(lanes={"policy": 5}))
    for run_id in ("r1", "r2"):
        queue.enqueue(run_id, lane="policy", priority=0, order=None, tags={})
    held = queue.claim("w1", [], 30)
    assert held is not None and held.run_id == "r1" and queue.take(held, "launch")
    assert queue.release("r1", "SUCCESS", 60)  # the reconciliation: no token
    assert queue.renew(held, 30) and queue.lease_holder("r1") is None  # no lease again
    assert queue.release("r1", "SUCCESS", 60, token=held.token)
    late = queue.claim("w1", [], 0.1)
    assert late is not None and late.run_id == "r2" and queue.take(late, "launch")
    time.sleep(0.2)
    adopter = queue.adopt("r2", "w2", 30)
    assert adopter is not None
    assert queue.release("r2", "FAILURE", 60, token=adopter.token)
    assert not queue.renew(late, 30)
    assert not queue.release("r2", "SUCCESS", 60, token=late.token)
    queue.client.close()


def test_a_cancel_between_claim_and_launch_wins(redis_prefix: str) -> None:
    """The claim and a cancel race: a run canceled after its claim is never started (the
    worker's take or start fails), and one started is not removed by a cancel."""
    from gov_pipeline.coordinator.queue import QueueLimits, RunQueue

    queue = RunQueue.from_url(REDIS_URL, redis_prefix, QueueLimits(lanes={"policy": 5}))
    for run_id in ("a", "b"):
        queue.enqueue(run_id, lane="policy", priority=0, order=None, tags={})
    a = queue.claim("w1", [], 30)
    assert a is not None and a.run_id == "a"
    assert queue.remove_queued("a", 60)  # canceled before the worker took it
    assert not queue.take(a, "launch") and queue.active() == set()
    b = queue.claim("w1", [], 30)
    assert b is not None and b.run_id == "b" and queue.take(b, "launch")
    assert queue.remove_queued("b", 60)  # canceled after the take, before the start
    assert not queue.start(b) and queue.active() == set()
    assert queue.record("b")["outcome"] == "CANCELED"
    queue.client.close()


def test_an_asset_run_without_a_lane_tag_takes_the_lane_its_ops_share(make_coordinated) -> None:  # type: ignore[no-untyped-def]
    """The Catalog's Materialize runs the governance assets in `__ASSET_JOB`, with no run
    tags: the run takes the `gov/queue` op tag its steps share (reporting), not a default."""
    c = make_coordinated()
    (run_id,) = c.submit([("__ASSET_JOB", {}, {})])
    run = c.instance.get_run_by_id(run_id)
    assert run is not None and run.tags["gov/queue"] == "reporting"
    assert c.instance.run_coordinator.queue.record(run_id)["lane"] == "reporting"


def test_dispose_closes_the_redis_connections() -> None:
    """Dagster disposes of the run coordinator with its instance: the queue's connections
    close with it (a process that makes instances does not leak them)."""
    import uuid

    from gov_pipeline.coordinator.run_coordinator import RedisRunCoordinator

    name = f"dispose-{uuid.uuid4().hex[:8]}"
    coordinator = RedisRunCoordinator(redis_url=REDIS_URL, key_prefix=name)
    queue = coordinator.queue
    queue.client.client_setname(name)  # a connection is open now, and named
    observer = redis.Redis.from_url(REDIS_URL, decode_responses=True)

    def open_names() -> list[str]:
        return [c["name"] for c in observer.client_list()]

    assert name in open_names()
    coordinator.dispose()
    assert name not in open_names()
    assert coordinator.queue is not queue  # a later use opens a new client
    coordinator.dispose()
    observer.close()
