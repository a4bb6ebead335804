"""Ending a run its worker holds before the run ends by itself: a run over its lane's time
is timed out (failed with the reason, tagged `gov/timed_out`, and re-run by Dagster's run
retries as its lane's attempts allow), and a run terminated while it executes inside an
execute-mode worker has its process stopped (coordinator/run_process.py)."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunRecord

from gov_pipeline.coordinator import run_process
from gov_pipeline.coordinator.instance import last_word
from gov_pipeline.coordinator.run_coordinator import RedisRunCoordinator
from gov_pipeline.coordinator.states import ENDED, Outcome, status_of
from gov_pipeline.domain.lanes import TIMED_OUT_TAG, TIMEOUT_TAG, LaneRule, lane_of

log = logging.getLogger(__name__)

MAX_RETRIES_TAG = "dagster/max_retries"  # Dagster's run retries: how many re-runs in all
# How long a run's process has, once asked to stop, before it is killed (execute mode) or
# the worker stops waiting for it (launch mode).
STOP_GRACE_S = 10.0
POLL_S = 0.25  # how often a worker looks at a run it holds


class Stop(StrEnum):
    """Why a worker stops a run's process."""

    CANCELED = "canceled"  # terminated (CANCELING), or ended from outside (forced in the UI)
    TIMED_OUT = "timed_out"  # over its lane's time


def over_time(record: RunRecord, rule: LaneRule, now: float | None = None) -> bool:
    """Whether the run has been running (since Dagster's RUN_START) longer than its rule
    allows."""
    if not rule.timeout_s or record.start_time is None:
        return False
    return (time.time() if now is None else now) - record.start_time > rule.timeout_s


# A run's own process records its end, then takes a moment to exit: a run ended this
# recently is not stopped yet (a SIGINT then would interrupt the process's own exit).
ENDED_GRACE_S = 5.0


def stop_reason(record: RunRecord | None, rule: LaneRule, now: float | None = None) -> Stop | None:
    """What a worker must do about a run whose process it has, as its record stands."""
    if record is None:  # deleted from run storage: nothing wants it any more
        return Stop.CANCELED
    status = record.dagster_run.status
    if status in ENDED:
        ended = record.end_time or record.update_timestamp.timestamp()
        recently = (time.time() if now is None else now) - ended < ENDED_GRACE_S
        return None if recently else Stop.CANCELED
    if status == DagsterRunStatus.CANCELING:
        return Stop.CANCELED
    return Stop.TIMED_OUT if over_time(record, rule) else None


def mark_timed_out(instance: DagsterInstance, run: DagsterRun, rule: LaneRule, lane: str) -> str:
    """Tag the run as timed out and let run retries re-run it until its lane's attempts are
    used (as the original queues retried a job that timed out); returns the sentence its
    failure records."""
    tags = {TIMED_OUT_TAG: run.run_id}
    if MAX_RETRIES_TAG not in run.tags:
        tags[MAX_RETRIES_TAG] = str(rule.retry.max_retries)
    instance.add_run_tags(run.run_id, tags)
    retries = (
        f"Run retries apply ({rule.retry.max_attempts} attempts in all)."
        if instance.run_retries_enabled
        else "Run retries are off in this instance."
    )
    return (
        f"Timed out: this run exceeded the {lane} lane's {rule.timeout_s:g} s "
        f"({TIMEOUT_TAG}); the worker stopped it. {retries}"
    )


def fail_after_launcher_stop(
    instance: DagsterInstance, run: DagsterRun, message: str, sleep: float = POLL_S
) -> bool:
    """Record the end of a timed-out run that its launcher was asked to terminate: wait
    (up to the grace period) for its process to record an end of its own, then fail the
    run with `message`, so that the failure is its last word whatever the process recorded.
    Returns whether the process did record an end (False: it may still be running)."""
    deadline = time.monotonic() + STOP_GRACE_S
    ended = False
    while not ended and time.monotonic() < deadline:
        current = instance.get_run_by_id(run.run_id)
        ended = current is None or current.status in ENDED
        if not ended:
            time.sleep(sleep)
    current = instance.get_run_by_id(run.run_id)
    if current is not None:
        with last_word():  # over the RUN_CANCELED its process recorded when terminated
            instance.report_run_failed(current, message)
    return ended


@dataclass
class Stopper:
    """Stops the runs one worker holds when they must end before they end by themselves."""

    instance: DagsterInstance
    coordinator: RedisRunCoordinator
    worker_id: str
    # Ends a run whose process died before the run ended (the worker's recovery: failed and
    # tagged so that run retries apply, or succeeded if every step had); the outcome.
    orphan_ended: Callable[[DagsterRun, str], str]

    def supervise(self, run: DagsterRun, pid: int) -> str:
        """Wait for an execute-mode run's process to exit; stop it (SIGINT, then SIGKILL
        after the grace period) when the run is terminated, ended from outside, or over its
        lane's time. Storage errors do not end the watch: the process is always waited for.
        Returns the run's outcome."""
        rule = self.coordinator.rule_of(run.tags)
        reason: Stop | None = None
        stopped_at = 0.0
        while (status := run_process.wait(pid, POLL_S)) is None:
            if reason is None:
                try:
                    reason = self._must_stop(run, rule)
                except Exception as exc:  # e.g. the database restarting: look again
                    log.warning("run %s: cannot read its status (%s); still watching",
                                run.run_id, exc)  # fmt: skip
                    continue
                if reason is not None:
                    run_process.signal_process(pid, signal.SIGINT)
                    stopped_at = time.monotonic()
            elif time.monotonic() - stopped_at > STOP_GRACE_S:
                log.warning("run %s: process %s still running after SIGINT; killing it",
                            run.run_id, pid)  # fmt: skip
                run_process.signal_process(pid, signal.SIGKILL)
                stopped_at = float("inf")  # once
        return self._after_process(run.run_id, pid, status, reason)

    def _must_stop(self, run: DagsterRun, rule: LaneRule) -> Stop | None:
        """Why the run's process must stop now (a time-out is recorded first), or None."""
        reason = stop_reason(self.instance.get_run_record_by_id(run.run_id), rule)
        if reason is Stop.TIMED_OUT:
            # Failed first: the stopped process then finds the run failed and records no end
            # of its own.
            message = mark_timed_out(self.instance, run, rule, self._lane(run))
            current = self.instance.get_run_by_id(run.run_id)
            if current is not None:
                self.instance.report_run_failed(current, message)
            log.warning("run %s: %s", run.run_id, message)
        return reason

    def _after_process(self, run_id: str, pid: int, status: int, reason: Stop | None) -> str:
        """The outcome of a run whose process has exited, ending the run if the process
        could not (killed, crashed)."""
        run = self.instance.get_run_by_id(run_id)
        how = run_process.describe_exit(status)
        if run is not None and run.status == DagsterRunStatus.CANCELING:
            self.instance.report_run_canceled(
                run, f"Worker {self.worker_id} stopped this run's process {pid} ({how})."
            )
        elif run is not None and run.status not in ENDED:
            return self.orphan_ended(run, f"this run's process {pid} {how}")
        if reason is Stop.TIMED_OUT:
            return Outcome.TIMED_OUT
        return status_of(self.instance.get_run_by_id(run_id))

    def time_out_launched(self, run: DagsterRun, rule: LaneRule, pid: int | None) -> None:
        """Time out a run a run launcher started: terminate it through the launcher (a
        finished run cannot be), kill its process (`pid`, when it runs on this host) if it
        has not recorded an end within the grace period, and fail the run."""
        message = mark_timed_out(self.instance, run, rule, self._lane(run))
        self.instance.report_engine_event(f"{message} Terminating it.", run)
        try:
            self.instance.run_launcher.terminate(run.run_id)
        except Exception as exc:  # an unreachable code server: the run is failed all the same
            log.warning("run %s: terminate failed: %s", run.run_id, exc)
        if not fail_after_launcher_stop(self.instance, run, message) and pid is not None:
            run_process.signal_process(pid, signal.SIGKILL)  # deaf to the termination
        log.warning("run %s: %s", run.run_id, message)

    def _lane(self, run: DagsterRun) -> str:
        return lane_of(run.tags, self.coordinator.default_lane)
