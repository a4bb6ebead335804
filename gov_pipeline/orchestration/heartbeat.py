"""Each run's own heartbeat: while its process lives, a thread of it renews the run's
liveness key in Redis (coordinator/queue.py `beat`), every third of the coordinator's
lease, for a lease. A worker waiting on a run it cannot see (launched on another host, in a
container, or adopted from a dead worker) ends the run once the beat has lapsed for a
lease: any worker, on any host, can end a dead run (coordinator/worker.py `_silent`).

It lives in the jobs' executor (`in_process`, as Dagster's, plus the beat), so that every
job of the code location beats from the first step to the process's end, whatever its ops
do. Without the Redis coordinator (the embedded default, a test's own instance) nothing
beats; `execute_in_process` uses an executor of its own and does not either.
"""

# No "from __future__ import annotations": Dagster reads the executor's config at runtime.

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import redis

from gov_pipeline.coordinator.queue import RunQueue
from gov_pipeline.coordinator.run_coordinator import RedisRunCoordinator

log = logging.getLogger(__name__)


class RunBeat:
    """The beat of one run: every `ttl_s / 3`, for `ttl_s`, until `stop_after`'s delay."""

    def __init__(self, queue: RunQueue, run_id: str, ttl_s: float) -> None:
        self.queue, self.run_id, self.ttl_s = queue, run_id, ttl_s
        self.where = f"{socket.gethostname()} pid {os.getpid()}"
        self._until: float | None = None
        self._wake = threading.Event()
        self._failing = False

    @classmethod
    def of(cls, instance: dg.DagsterInstance, run_id: str) -> "RunBeat | None":
        coordinator = instance.run_coordinator
        if not isinstance(coordinator, RedisRunCoordinator):
            return None
        return cls(coordinator.queue, run_id, float(coordinator.lease_seconds))

    def start(self) -> None:
        self._beat()  # at once: a worker may be looking already
        name = f"beat-{self.run_id[:8]}"
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def stop_after(self, delay_s: float) -> None:
        """Beat on for `delay_s` more (the run's end is written after its steps), then
        stop; the key lapses by itself a lease later."""
        self._until = time.monotonic() + delay_s

    def _loop(self) -> None:
        while self._until is None or time.monotonic() < self._until:
            self._wake.wait(self.ttl_s / 3)
            self._beat()

    def _beat(self) -> None:
        try:
            self.queue.beat(self.run_id, self.where, self.ttl_s)
        except redis.RedisError as exc:  # Redis away: the workers cannot look either
            if not self._failing:
                log.warning("run %s: its heartbeat fails (%s); retrying", self.run_id, exc)
            self._failing = True
            return
        if self._failing:
            log.warning("run %s: its heartbeat is back", self.run_id)
        self._failing = False


class BeatingExecutor(dg.Executor):
    """An executor that beats for its run while another executes it."""

    def __init__(self, inner: dg.Executor) -> None:
        self._inner = inner

    @property
    def retries(self) -> Any:
        return self._inner.retries

    @property
    def step_dependency_config(self) -> Any:
        return self._inner.step_dependency_config

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[dg.DagsterEvent]:
        beat = RunBeat.of(plan_context.instance, plan_context.run_id)
        if beat is not None:
            beat.start()
        try:
            yield from self._inner.execute(plan_context, execution_plan)
        finally:
            if beat is not None:
                beat.stop_after(beat.ttl_s)


@dg.executor(name="in_process", config_schema=dg.in_process_executor.config_schema.as_field())
def beating_in_process_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Dagster's in-process executor, with the run's heartbeat (see the module)."""
    return BeatingExecutor(dg.in_process_executor.executor_creation_fn(init_context))  # type: ignore[misc]
