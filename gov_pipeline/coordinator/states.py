"""The names the queue stores in Redis, in one place: a run record's `state` and the
`outcome` it ends with, and the Dagster run statuses that end a run."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from dagster import DagsterRunStatus

if TYPE_CHECKING:
    from dagster import DagsterRun

# Dagster run statuses a run never leaves: its slot in the queue can be freed.
ENDED = frozenset({DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED})


class RunState(StrEnum):
    """A run record's `state` in Redis (`Keys.run`). The Lua scripts get these as ARGV."""

    QUEUED = "queued"  # in line in its lane
    CLAIMED = "claimed"  # taken by a worker, under a lease, not launched yet
    STARTED = "started"  # launched or executing, under a lease
    FINISHED = "finished"  # out of line and slot freed; the record expires after retention


class Outcome(StrEnum):
    """How a run's time in the queue ended, when it is not simply the run's Dagster status
    (`SUCCESS`, `FAILURE`, ...; see `status_of`). Stored as the record's `outcome` and
    counted in a worker's exit summary, so the values stay exactly as they are (upper case,
    like the Dagster statuses they stand beside); `skipped` and `errored` build the
    composite ones."""

    ERROR = "ERROR"  # the worker's handling of the run stopped before it had an outcome
    MISSING = "missing"  # the run is not in Dagster's run storage
    CANCELED = "CANCELED"  # canceled while in line, before any worker claimed it
    LEASE_LOST = "SKIPPED:lease-lost"  # the lease had gone (before the launch, or by the end)
    # The worker executing the run died; the run was failed (run retries apply) ...
    WORKER_DIED_FAILURE = "FAILURE:worker-died"
    # ... or succeeded, every step having succeeded before the worker died.
    WORKER_DIED_SUCCESS = "SUCCESS:worker-died"
    # The run ran longer than its lane allows: stopped and failed (gov/timed_out).
    TIMED_OUT = "FAILURE:timed-out"
    # Not the worker's to release (the slot is freed otherwise): canceled between its claim
    # and its launch (the cancel freed it) ...
    CANCELED_AFTER_CLAIM = "SKIPPED:canceled"
    # ... or back in line, its code server unreachable at launch (user-code retries).
    REQUEUED = "REQUEUED:code-server-unreachable"


def status_of(run: DagsterRun | None) -> str:
    """The run's Dagster status (`SUCCESS`, `CANCELED`, ...), or `missing` for no run."""
    return Outcome.MISSING if run is None else str(run.status.value)


def skipped(run: DagsterRun | None) -> str:
    """A claimed run left alone because Dagster no longer has it QUEUED (canceled while in
    line, launched by the submit fallback or a replay): `SKIPPED:<its status>`."""
    return f"SKIPPED:{status_of(run)}"


def errored(exc: BaseException) -> str:
    """A run whose handling raised: `ERROR:<exception type>`."""
    return f"{Outcome.ERROR}:{type(exc).__name__}"
