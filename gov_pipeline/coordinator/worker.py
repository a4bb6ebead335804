"""`gov-pipeline worker`: claims runs from the Redis queue and launches or executes them.

Shape: `try: while not stopping: heartbeat, recover, reconcile, claim ... finally: teardown`.
The first SIGTERM (or Ctrl-C) stops claiming and lets the current runs finish; the second
stops now (their leases then expire and another worker recovers them).

Modes:
- `launch`: hand the run to the instance's run launcher (a new process per run with the
  default launcher; a container with a Docker or Kubernetes launcher) and hold its slot
  until the run ends;
- `execute`: execute the run in a fork of this warm process (no interpreter start, no
  imports per run), which the worker stops when the run is terminated (coordinator/
  run_process.py).

A run over its lane's time (`gov/timeout_s`) is stopped and failed by its worker, in both
modes (coordinator/stopping.py).

Recovery: a run whose lease expired belonged to a dead worker. It is checked in Dagster's
run storage: still QUEUED -> put back in line; ended -> slot released; started by a
launcher -> adopted (its process lives on) and watched to its end; started inside a dead
worker (execute mode), or by a launcher on this host whose run process died too -> failed
with the reason (run retries then apply), or succeeded when every step had succeeded before
the worker died. An adopted run whose process dies later is ended the same way. A run whose
process this host cannot see (another host, a container) beats (orchestration/heartbeat.py):
whichever worker holds it, its launcher or an adopter, ends it once the beat has lapsed.
Reconciliation (at start, then periodically): QUEUED runs missing from Redis (flushed,
restarted, or down at submit) are queued again; runs holding slots that have ended release.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultRunLauncher,
    RunsFilter,
)

from gov_pipeline.coordinator import contract, run_process
from gov_pipeline.coordinator.queue import WORKER_DIED_TAG, Lease, default_worker_id
from gov_pipeline.coordinator.run_coordinator import RedisRunCoordinator
from gov_pipeline.coordinator.states import ENDED, Outcome, RunState, errored, skipped, status_of
from gov_pipeline.coordinator.stopping import POLL_S, Stopper, over_time
from gov_pipeline.dagster_internals import (
    ReconstructableRepository,
    StepEventStatus,
    WorkspaceFileTarget,
    WorkspaceProcessContext,
)
from gov_pipeline.domain.lanes import LaneRule

log = logging.getLogger(__name__)

# Held while a worker's main loop talks to Redis or Dagster's storage. The fork that starts
# an execute-mode run takes it, so a run's process is never a copy of this process made in
# the middle of such a call (a lock taken, a connection half-way through a reply).
_QUIET = threading.RLock()
MODES = ("launch", "execute")
RECONCILE_PAGE = 500  # QUEUED runs read from Dagster's run storage at a time


def every_step_succeeded(instance: DagsterInstance, run: DagsterRun) -> bool:
    """Whether every step the run was to execute succeeded or was skipped (read from the
    run's event log)."""
    if run.execution_plan_snapshot_id is None:
        return False
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    wanted = set(plan.step_keys_to_execute)
    done = {
        stats.step_key
        for stats in instance.get_run_step_stats(run.run_id)
        if stats.status in (StepEventStatus.SUCCESS, StepEventStatus.SKIPPED)
    }
    return bool(wanted) and wanted <= done


def run_process_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The pid of the process executing the run, from Dagster's `Started process for run`
    event (the launcher's run process); None before it has started."""
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ENGINE_EVENT, ascending=False, limit=100
    ).records
    for record in records:
        entry = record.event_log_entry
        if entry.message.startswith("Started process for run") and entry.dagster_event:
            data = entry.dagster_event.engine_event_data
            pid = data.metadata.get("pid") if data else None
            if pid is not None and str(pid.value).isdigit():
                return int(str(pid.value))
    return None


def local_run_pid(instance: DagsterInstance, run_id: str, record: dict[str, str]) -> int | None:
    """The pid of the run's process if it runs on this host and has started; None otherwise
    (elsewhere its heartbeat and its end are watched). The run's own beat ("host pid P")
    says where it runs; before its first beat, the launching worker's host and Dagster's
    `Started process for run` event do, for the default launcher only: a Docker or
    Kubernetes launcher's run process is a container's, whose pid means nothing here."""
    beats = record.get("beats")
    if beats:
        host, _, pid = beats.partition(" pid ")
        return int(pid) if host == socket.gethostname() and pid.isdigit() else None
    if record.get("host") != socket.gethostname():
        return None
    if not isinstance(instance.run_launcher, DefaultRunLauncher):
        return None
    return run_process_pid(instance, run_id)


def process_gone(pid: int) -> bool:
    """Whether no process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


@dataclass
class WorkerStats:
    """What a worker did, for its exit summary."""

    claimed: int = 0
    finished: int = 0
    # Runs put back in line: QUEUED runs whose worker died before launching them, and the
    # `lost` ones.
    requeued: int = 0
    # Of `requeued`: runs QUEUED in Dagster that Redis no longer had (reconciliation).
    lost: int = 0
    # Slots held in Redis by runs that had ended (reconciliation released them).
    released: int = 0
    # Started runs of dead workers, adopted or ended.
    recovered: int = 0
    # What reconciliation fixed: `lost` plus `released`.
    reconciled: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


# Fence a run another worker held, in the application's database: (run id, the lease token
# of the worker ending it, why) -> False if it cannot be fenced yet. `gov-pipeline worker`
# gives services.run_fences.fence_run; without one, runs are ended unfenced.
Fence = Callable[[str, str, str], bool]


@dataclass
class Silence:
    """A run's lapsed beat, believed once it has stayed lapsed for `confirm_s`."""

    confirm_s: float
    since: float | None = None
    every_s: float = 0.0  # how often the beat is worth reading (`due`)
    _next: float = 0.0

    def due(self) -> bool:
        """Whether to read the beat now: it changes every third of a lease, not every poll."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.every_s
        return True

    def confirmed(self, lapsed: str | None) -> str | None:
        """`lapsed` (where the run's process was) once it has been so for `confirm_s`."""
        if lapsed is None:
            self.since = None
            return None
        now = time.monotonic()
        if self.since is None:
            self.since = now
        return lapsed if now - self.since >= self.confirm_s else None


class Worker:
    """One worker process: `concurrency` runs at a time from `lanes` (all if empty)."""

    def __init__(
        self,
        instance: DagsterInstance,
        *,
        workspace: Path,
        mode: str = "launch",
        concurrency: int = 1,
        lanes: Sequence[str] = (),
        burst: bool = False,
        worker_id: str | None = None,
        poll_s: float = 0.2,
        reconcile_every_s: float = 30.0,
        fence: Fence | None = None,
    ) -> None:
        coordinator = instance.run_coordinator
        if not isinstance(coordinator, RedisRunCoordinator):
            raise RuntimeError(
                "the instance's run coordinator is "
                f"{type(coordinator).__name__}, not RedisRunCoordinator: name it in "
                "$DAGSTER_HOME/dagster.yaml (see the top-level dagster.yaml)"
            )
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "execute" and concurrency > 1:
            raise ValueError(
                "execute mode runs one run at a time per process; start more processes "
                "(gov-pipeline worker --mode execute --concurrency N does)"
            )
        self.instance = instance
        self.coordinator = coordinator
        self.queue = coordinator.queue
        self.workspace = workspace
        self.mode = mode
        self.concurrency = max(1, concurrency)
        self.lanes = list(lanes)
        self.burst = burst
        self.worker_id = worker_id or default_worker_id()
        self.lease_s = float(coordinator.lease_seconds)
        self.poll_s = poll_s
        self.reconcile_every_s = reconcile_every_s
        self.fence = fence
        self.stats = WorkerStats()
        self._inflight: dict[str, threading.Thread] = {}
        self._leases: dict[str, Lease] = {}  # of the runs in flight: their tokens
        self._lost: set[str] = set()  # runs in flight whose lease another holds now
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._run_ended = threading.Event()
        self._signals = 0
        self._workspace_context: Any = None
        self._recon_repo: Any = None
        self._stopper = Stopper(instance, coordinator, self.worker_id, self._orphan_ended)

    # -- lifecycle ---------------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        """First call: finish the current runs and exit. Second: exit now."""
        self._signals += 1
        if self._signals == 1:
            log.info("worker %s: stopping after the current runs", self.worker_id)
            self._stopping.set()
            self._run_ended.set()
        else:
            log.warning("worker %s: stopping now; leases of %s will expire",
                        self.worker_id, list(self._inflight))  # fmt: skip
            os._exit(1)

    def run(self, install_signals: bool = True) -> WorkerStats:
        if install_signals:
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        last_reconcile = 0.0
        last_beat = 0.0
        last_sync = 0.0
        try:
            self._open_code()
            with _QUIET:
                self._heartbeat()
                self.sync_storage()
                self.reconcile()
            last_reconcile = last_sync = time.monotonic()
            while not self._stopping.is_set():
                now = time.monotonic()
                try:
                    with _QUIET:
                        if now - last_beat >= self.lease_s / 3:
                            self._heartbeat()
                            last_beat = now
                        self.recover_expired()
                        if now - last_sync >= self.coordinator.storage_sync_seconds:
                            last_sync = now
                            if self.queue.sync_due(
                                self.worker_id, self.coordinator.storage_sync_seconds
                            ):
                                self.sync_storage()
                        if now - last_reconcile >= self.reconcile_every_s:
                            self.reconcile()
                            last_reconcile = now
                        # Reap first: a finished run's slot is free for this very claim.
                        self._reap()
                        claimed = self._claim_free_slots()
                except redis.RedisError as exc:
                    # Redis coordinates, it does not own: wait for it; runs in hand go on.
                    log.warning("worker %s: Redis unavailable (%s); retrying", self.worker_id, exc)
                    self._stopping.wait(1.0)
                    continue
                if self.burst and not claimed and not self._inflight and not self._waiting():
                    log.info("worker %s: queue drained (--burst), exiting", self.worker_id)
                    break
                if not claimed:
                    # Wake when a run ends (a slot frees up) or after poll_s for new work.
                    self._run_ended.wait(self.poll_s)
                    self._run_ended.clear()
            self._drain_inflight()
        finally:
            self._teardown()
        return self.stats

    def _open_code(self) -> None:
        if self.mode == "launch":
            self._workspace_context = WorkspaceProcessContext(
                self.instance, WorkspaceFileTarget(paths=[str(self.workspace)])
            )
        else:
            if self.coordinator.settings.max_user_code_failure_retries:
                log.warning(
                    "worker %s: max_user_code_failure_retries is ignored in execute mode "
                    "(the worker loads the code itself: there is no code server to retry)",
                    self.worker_id,
                )
            self._recon_repo = ReconstructableRepository.for_module(
                "gov_pipeline.definitions", "defs", working_directory=str(self.workspace.parent)
            )
            # Load the definitions here, once: each run's process is a fork of this one. What
            # is loaded by now lives as long as the worker: frozen, the garbage collector of a
            # run's process leaves it alone, so its pages stay shared with this process.
            self._recon_repo.get_definition()
            gc.collect()
            gc.freeze()

    def _teardown(self) -> None:
        try:
            self.queue.forget_worker(self.worker_id)
        except redis.RedisError as exc:
            log.warning("worker %s: could not unregister: %s", self.worker_id, exc)
        if self._workspace_context is not None:
            self._workspace_context.__exit__(None, None, None)
            self._workspace_context = None

    def _heartbeat(self) -> None:
        info = {
            "host": socket.gethostname(), "pid": os.getpid(), "mode": self.mode,
            "lanes": self.lanes or ["*"], "concurrency": self.concurrency,
            "running": sorted(self._inflight),
        }  # fmt: skip
        self.queue.heartbeat(self.worker_id, info, ttl_s=self.lease_s)
        for lease in list(self._leases.values()):
            if not self.queue.renew(lease, self.lease_s) and lease.run_id not in self._lost:
                self._lost.add(lease.run_id)
                log.warning(
                    "worker %s: lost the lease of run %s (token %s): another worker holds "
                    "it now, and Redis refuses this one's steps on it",
                    self.worker_id, lease.run_id, lease.token,
                )  # fmt: skip

    # -- claiming and running ----------------------------------------------------------

    def _claim_free_slots(self) -> int:
        claimed = 0
        while len(self._inflight) < self.concurrency and not self._stopping.is_set():
            lease = self.claim_one()
            if lease is None:
                break
            run_id = lease.run_id
            claimed += 1
            self.stats.claimed += 1
            log.info("worker %s: claimed run %s", self.worker_id, run_id)
            thread = threading.Thread(
                target=self._handle, args=(run_id,), name=f"run-{run_id[:8]}", daemon=True
            )
            with self._lock:
                self._inflight[run_id] = thread
                self._leases[run_id] = lease
            thread.start()
        return claimed

    def claim_one(self) -> Lease | None:
        """Claim the next run this worker may take, without launching it: the pool check
        (only while runs using pools are in Redis), then the claim; None if none."""
        while True:
            pooled = self.queue.pooled()
            blocked = (
                contract.pool_blocked(
                    self.instance, pooled, self.queue.active(), self.coordinator.settings
                )
                if pooled
                else []
            )
            lease = self.queue.claim(self.worker_id, self.lanes, self.lease_s, blocked=blocked)
            if lease is None or self.queue.take(lease, self.mode):
                return lease
            # Canceled (or taken over) between the claim and now: the cancel freed it.

    def _waiting(self) -> bool:
        lanes = self.lanes or self.queue.lanes()
        return any(self.queue.queued(lane) for lane in lanes if lane not in self.queue.paused())

    def _reap(self) -> None:
        with self._lock:
            for run_id, thread in list(self._inflight.items()):
                if not thread.is_alive():
                    del self._inflight[run_id]

    def _drain_inflight(self) -> None:
        while True:
            self._reap()
            if not self._inflight:
                return
            try:
                with _QUIET:
                    self._heartbeat()
            except redis.RedisError as exc:
                log.warning("worker %s: Redis unavailable while draining: %s", self.worker_id, exc)
            time.sleep(min(1.0, self.lease_s / 3))

    def _handle(self, run_id: str) -> None:
        lease = self._leases[run_id]  # its claim put it there
        outcome: str = Outcome.ERROR
        try:
            run = self.instance.get_run_by_id(run_id)
            if run is None or run.status != DagsterRunStatus.QUEUED:
                # Canceled while waiting, or already launched (by a fallback or a replay).
                outcome = skipped(run)
                return
            if not self.queue.start(lease):
                # Canceled since the claim (the cancel freed the slot), or the lease is gone.
                canceled = self.queue.record(run_id).get("state") == RunState.FINISHED
                outcome = Outcome.CANCELED_AFTER_CLAIM if canceled else Outcome.LEASE_LOST
                return
            outcome = self._launch(run, lease) if self.mode == "launch" else self._execute(run_id)
        except Exception as exc:
            log.exception("worker %s: run %s: %s", self.worker_id, run_id, exc)
            outcome = errored(exc)
        finally:
            self._finish(run_id, outcome)

    def _launch(self, run: DagsterRun, lease: Lease) -> str:
        """Hand the run to the run launcher, as Dagster's dequeuer does; then hold its slot
        until it ends. The outcome (REQUEUED: back in line, its code server unreachable)."""
        workspace = self._workspace_context.create_request_context()
        failed = contract.launch(self.instance, run, workspace, self.coordinator.settings)
        if failed == Outcome.REQUEUED:
            not_before = contract.retry_at(self.coordinator.settings)
            self.queue.requeue(
                run.run_id, "code server unreachable at launch", not_before, token=lease.token
            )
        if failed is not None:
            return failed
        return self._wait_until_ended(run.run_id)

    def _execute(self, run_id: str) -> str:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None
        starting = DagsterEvent(
            event_type_value=DagsterEventType.PIPELINE_STARTING.value, job_name=run.job_name
        )
        self.instance.report_dagster_event(starting, run_id=run_id)
        run = self.instance.get_run_by_id(run_id)
        assert run is not None
        with _QUIET:
            pid = run_process.start(self.instance, self._recon_repo, run_id)
        log.info("worker %s: run %s executing in process %s", self.worker_id, run_id, pid)
        return self._stopper.supervise(run, pid)

    def _wait_until_ended(self, run_id: str) -> str:
        """Hold a launched run's slot until it ends; time it out when it runs too long, and
        end it when its process, wherever it runs, stops beating."""
        rule: LaneRule | None = None
        silence = Silence(self.lease_s, every_s=self.lease_s / 3)
        while True:
            record = self.instance.get_run_record_by_id(run_id)
            if record is None or record.dagster_run.status in ENDED:  # (or deleted)
                return status_of(None if record is None else record.dagster_run)
            rule = rule or self.coordinator.rule_of(record.dagster_run.tags)
            if over_time(record, rule):
                self._stopper.time_out_launched(record.dagster_run, rule, self._pid_here(run_id))
                return Outcome.TIMED_OUT
            dead = self._silent(run_id, silence)
            if dead is not None and self._fenced(run_id, dead[1]):
                return self._orphan_ended(*dead)
            time.sleep(POLL_S)

    def _silent(self, run_id: str, silence: Silence) -> tuple[DagsterRun, str] | None:
        """The run and why it is dead, once its process has stopped beating (for a whole
        lease after its beat was first found lapsed: Redis back from an outage is given
        time to hear the beats again) and the run has not ended meanwhile."""
        if not silence.due():
            return None
        try:
            where = silence.confirmed(self.queue.beat_lapsed(run_id))
        except redis.RedisError:  # unknown while Redis is away: nothing is concluded
            return None
        run = None if where is None else self.instance.get_run_by_id(run_id)
        if run is None or run.status in ENDED:
            return None
        return run, f"this run's process ({where}) stopped beating for {self.lease_s:g} s"

    def _pid_here(self, run_id: str) -> int | None:
        """The launched run's process, if it runs on this host."""
        return local_run_pid(self.instance, run_id, self.queue.record(run_id))

    def _status(self, run_id: str) -> str:
        return status_of(self.instance.get_run_by_id(run_id))

    def _finish(self, run_id: str, outcome: str) -> None:
        """The run's time with this worker is over: release its slot with `outcome` (unless
        it is not this worker's to release any more: canceled, or back in line)."""
        outcome = str(outcome)  # not an Outcome member: the summary prints the counts' keys
        lease = self._leases.get(run_id)
        try:
            if outcome not in (Outcome.CANCELED_AFTER_CLAIM, Outcome.REQUEUED):
                token = None if lease is None else lease.token
                if not self.queue.release(
                    run_id, outcome, self.coordinator.retention_seconds, token=token
                ):
                    outcome = str(Outcome.LEASE_LOST)  # another holds it now: its slot stays
        except redis.RedisError as exc:  # reconciliation releases it later
            log.warning("worker %s: could not release run %s: %s", self.worker_id, run_id, exc)
        self.stats.finished += 1
        self.stats.outcomes[outcome] = self.stats.outcomes.get(outcome, 0) + 1
        log.info("worker %s: run %s ended: %s", self.worker_id, run_id, outcome)
        with self._lock:  # the slot is free now, not when this thread has fully exited
            self._inflight.pop(run_id, None)
            self._leases.pop(run_id, None)
            self._lost.discard(run_id)
        self._run_ended.set()

    # -- recovery and reconciliation ---------------------------------------------------

    def recover_expired(self) -> None:
        """Handle runs holding a slot whose lease has expired (their worker died)."""
        for run_id in self.queue.active() - set(self._inflight):
            if self.queue.lease_holder(run_id) is not None:
                continue
            run = self.instance.get_run_by_id(run_id)
            record = self.queue.record(run_id)
            if run is None or run.status in ENDED:
                self.queue.release(run_id, status_of(run), self.coordinator.retention_seconds)
                continue
            if run.status == DagsterRunStatus.QUEUED:
                if self.queue.requeue(run_id, "lease expired before launch"):
                    self.stats.requeued += 1
                    log.warning("run %s: its worker died before launching it; queued again", run_id)
                continue
            lease = self.queue.adopt(run_id, self.worker_id, self.lease_s)
            if lease is None:
                continue  # another worker got there first
            with self._lock:
                self._leases[run_id] = lease
            self.stats.recovered += 1
            dead = record.get("lost_by") or record.get("worker", "?")
            if record.get("mode") == "execute":
                self._end_orphan(
                    run, f"worker {dead} died while executing this run (its lease expired)"
                )
                continue
            pid = local_run_pid(self.instance, run_id, record)
            if pid is not None and process_gone(pid):
                self._end_orphan(
                    run,
                    f"worker {dead} died, and this run's process {pid} with it (its lease expired)",
                )
                continue
            # Launched by a dead worker: the run's own process lives on; watch it to the end.
            thread = threading.Thread(
                target=self._watch_adopted, args=(run_id, record, pid), daemon=True
            )
            with self._lock:
                self._inflight[run_id] = thread
            thread.start()
            log.warning("run %s: adopted from a dead worker; watching it", run_id)

    def _end_orphan(self, run: DagsterRun, what: str) -> None:
        """End a run another worker held: fenced first, so that its process, if it lives on
        a host cut off from here, commits nothing once it is back. Not fenced yet (a
        transaction of the run still holds its lock, or the database is away): the lease is
        left to expire and the next recovery pass, here or elsewhere, tries again."""
        if not self._fenced(run.run_id, what):
            with self._lock:
                self._leases.pop(run.run_id, None)
                self._inflight.pop(run.run_id, None)
            return
        self._finish(run.run_id, self._orphan_ended(run, what))

    def _fenced(self, run_id: str, what: str) -> bool:
        lease = self._leases.get(run_id)
        if self.fence is None or lease is None:
            return True
        try:
            if self.fence(run_id, lease.token, what):
                return True
            why = "a transaction of the run still holds its lock"
        except Exception as exc:  # the database away: as a lock still held
            why = f"{type(exc).__name__}: {exc}"
        log.warning("run %s: not fenced yet (%s); ending it on a later pass", run_id, why)
        return False

    def _orphan_ended(self, run: DagsterRun, what: str) -> str:
        """End a started run that nothing executes any more (its worker, or the process
        executing it, died); returns the outcome.

        Killed after its last step, before Dagster recorded the run's end, the work is done
        (a retry from failure would have nothing to run): the run succeeded. Otherwise it
        failed, tagged so that the failure sensor leaves its executions to the sweeper, and
        run retries apply.
        """
        run_id = run.run_id
        if run.status == DagsterRunStatus.CANCELING:
            message = f"{what}, while the run was being canceled; it is canceled"
            self.instance.report_engine_event(message, run)
            self.instance.report_run_canceled(run)
            log.warning("run %s: %s", run_id, message)
            return str(DagsterRunStatus.CANCELED.value)
        if every_step_succeeded(self.instance, run):
            message = f"{what}, after every step of this run had succeeded; the run is complete"
            self.instance.report_engine_event(message, run)
            success = DagsterEvent(
                event_type_value=DagsterEventType.RUN_SUCCESS.value,
                job_name=run.job_name,
                message=message,
            )
            self.instance.report_dagster_event(success, run_id=run_id)
            outcome = Outcome.WORKER_DIED_SUCCESS
        else:
            message = f"{what}; run retries apply"
            self.instance.report_engine_event(message, run)
            self.instance.add_run_tags(run_id, {WORKER_DIED_TAG: run_id})
            self.instance.report_run_failed(run)
            outcome = Outcome.WORKER_DIED_FAILURE
        log.warning("run %s: %s", run_id, message)
        return outcome

    def _watch_adopted(self, run_id: str, record: dict[str, str], pid: int | None) -> None:
        """Wait for an adopted run to end; end it if its process dies before it does, and
        time it out if it runs too long. On another host, its heartbeat tells whether it
        lives."""
        silence = Silence(self.lease_s, every_s=self.lease_s / 3)
        while True:
            with _QUIET:  # an execute-mode worker may adopt a launched run, and fork
                run_record = self.instance.get_run_record_by_id(run_id)
            run = None if run_record is None else run_record.dagster_run
            if run_record is None or run is None or run.status in ENDED:
                self._finish(run_id, status_of(run))
                return
            rule = self.coordinator.rule_of(run.tags)
            if over_time(run_record, rule):
                self._stopper.time_out_launched(run, rule, pid or self._pid_here(run_id))
                self._finish(run_id, Outcome.TIMED_OUT)
                return
            if pid is None:  # not started when adopted (or on another host: stays None)
                pid = local_run_pid(self.instance, run_id, record)
            dead = self._silent(run_id, silence) if pid is None else None
            if dead is not None:
                self._end_orphan(*dead)
                return
            if pid is not None and process_gone(pid):
                time.sleep(1.0)  # it may have ended just now: its last events are on their way
                run = self.instance.get_run_by_id(run_id)
                if run is not None and run.status not in ENDED:
                    self._end_orphan(run, f"this run's process {pid} died")
                    return
                continue
            time.sleep(1.0)

    def sync_storage(self) -> int:
        """Copy run storage into Redis (every `storage_sync_seconds`, by one worker per
        interval): its runs in progress that hold no slot here count against the limits of
        every claim, and QUEUED runs Redis does not know (created QUEUED without a submit,
        queued again by a launch that could not reach its code server, submitted while
        Redis was down) are put in line. Returns how many were put in line."""
        in_progress = contract.in_progress_runs(self.instance)
        self.queue.sync_outside(
            {run.run_id: self.coordinator.in_progress_entry(run) for run in in_progress}
        )
        window = max(10.0, 5 * self.coordinator.storage_sync_seconds)
        recent = self.instance.get_runs(
            RunsFilter(
                statuses=[DagsterRunStatus.QUEUED],
                updated_after=datetime.fromtimestamp(time.time() - window, tz=UTC),
            ),
            limit=RECONCILE_PAGE,
            ascending=True,
        )
        return self._enqueue_missing(recent)

    def _enqueue_missing(self, runs: Sequence[DagsterRun]) -> int:
        """Put in line those of these QUEUED runs that Redis does not hold; how many."""
        fixed = 0
        states = self.queue.states([run.run_id for run in runs])
        for waiting, state in zip(runs, states, strict=True):
            if state in (None, RunState.FINISHED) and self.coordinator.enqueue(waiting):
                fixed += 1
                self.stats.lost += 1
                self.stats.requeued += 1
                self.stats.reconciled += 1
                log.warning("run %s: QUEUED in Dagster but not in Redis; queued again",
                            waiting.run_id)  # fmt: skip
        return fixed

    def reconcile(self) -> int:
        """Make Redis agree with Dagster's run storage; returns how many runs were fixed."""
        fixed = 0
        # Oldest first, so a rebuilt queue keeps submit order (per policy, too); a page of
        # runs at a time, their Redis states in one round trip per page.
        cursor = None
        while True:
            page = self.instance.get_runs(
                RunsFilter(statuses=[DagsterRunStatus.QUEUED]), cursor=cursor,
                limit=RECONCILE_PAGE, ascending=True,
            )  # fmt: skip
            fixed += self._enqueue_missing(page)
            if len(page) < RECONCILE_PAGE:
                break
            cursor = page[-1].run_id
        for run_id in self.queue.active() - set(self._inflight):
            run = self.instance.get_run_by_id(run_id)
            if run is None or run.status in ENDED:
                self.queue.release(run_id, status_of(run), self.coordinator.retention_seconds)
                fixed += 1
                self.stats.released += 1
                self.stats.reconciled += 1
        for worker_id in self.queue.prune_workers(self.coordinator.retention_seconds):
            log.info("worker %s: forgot worker %s (no heartbeat for a retention period)",
                     self.worker_id, worker_id)  # fmt: skip
        return fixed
