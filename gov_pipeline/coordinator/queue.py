"""The run queue in Redis: enqueue, claim, release, requeue, leases, status.

Every state change is one Lua script (see `scripts.py`): a claim checks the global, lane
and tag limits, the priority order and the per-ordering-key FIFO, and takes the run and
its lease in one step. Redis holds the queue and the slots; Dagster's run storage stays the
source of truth (the worker reconciles the two).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from gov_pipeline.coordinator import scripts
from gov_pipeline.coordinator.keys import Keys
from gov_pipeline.coordinator.states import Outcome, RunState
from gov_pipeline.domain.lanes import DEFAULT_LIMITS
from gov_pipeline.domain.lanes import LANE_TAG as LANE_TAG  # re-exported: the coordinator's tag
from gov_pipeline.domain.lanes import lane_of as lane_of

# The eight queues of the original system and their planned concurrency (the table, with
# each lane's retries and timeout, is domain/lanes.py).
DEFAULT_LANES: dict[str, int] = dict(DEFAULT_LIMITS)
# Set on a run failed because the worker executing it died. Its value is that run's id: run
# retries copy their parent's tags, and the tag must not speak for the retry.
WORKER_DIED_TAG = "gov/worker_died"
PRIORITY_TAG = "dagster/priority"


def priority_of(tags: Mapping[str, str]) -> int:
    """`dagster/priority` as an int (non-numbers count as 0, as in Dagster's own queue)."""
    try:
        return max(-(10**6), min(10**6, int(tags.get(PRIORITY_TAG, "0"))))
    except ValueError:
        return 0


@dataclass(frozen=True)
class TagLimit:
    """Dagster's `tag_concurrency_limits` entry: a key, optionally a value or per-value."""

    key: str
    limit: int
    value: str | None = None
    per_unique: bool = False

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> TagLimit:
        value = raw.get("value")
        if isinstance(value, Mapping):
            return cls(
                str(raw["key"]),
                int(raw["limit"]),
                None,
                bool(value.get("applyLimitPerUniqueValue")),
            )
        return cls(str(raw["key"]), int(raw["limit"]), None if value is None else str(value))

    def as_lua(self) -> dict[str, Any]:
        data: dict[str, Any] = {"key": self.key, "limit": self.limit, "per_unique": self.per_unique}
        if self.value is not None:
            data["value"] = self.value
        return data


@dataclass(frozen=True)
class QueueLimits:
    max_concurrent_runs: int = 10
    lanes: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LANES))
    tag_limits: tuple[TagLimit, ...] = ()


class RunQueue:
    """The queue operations, over one Redis client and key prefix."""

    def __init__(self, client: redis.Redis, prefix: str, limits: QueueLimits) -> None:
        self.client = client
        self.keys = Keys(prefix)
        # What the scripts that build keys of lanes and runs get as ARGV[1].
        self._layout = json.dumps(self.keys.templates)
        self.limits = limits
        self._scripts = {
            name: client.register_script(getattr(scripts, name))
            for name in (
                "ENQUEUE",
                "CLAIM",
                "RELEASE",
                "REQUEUE",
                "RENEW",
                "ADOPT",
                "REMOVE_QUEUED",
            )
        }

    @classmethod
    def from_url(cls, url: str, prefix: str, limits: QueueLimits) -> RunQueue:
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
        )
        return cls(client, prefix, limits)

    def enqueue(
        self, run_id: str, *, lane: str, priority: int, order: str | None, tags: Mapping[str, str]
    ) -> bool:
        """Put a run in line (no-op if it is already queued or held). True if added."""
        k = self.keys
        order_key = k.order(order) if order else ""
        added = self._scripts["ENQUEUE"](
            keys=[k.seq, k.queued(lane), k.run(run_id), order_key, k.lanes],
            args=[
                run_id, lane, priority, order or "", json.dumps(dict(tags)), time.time(),
                RunState.QUEUED, RunState.FINISHED,
            ],
        )  # fmt: skip
        return bool(added)

    def claim(
        self, worker_id: str, lanes: Sequence[str], lease_s: float, mode: str, scan: int = 500
    ) -> str | None:
        """Take the next runnable run for `worker_id`, honouring every limit; None if none."""
        k = self.keys
        result = self._scripts["CLAIM"](
            keys=[k.active, k.paused, k.lanes],
            args=[
                self._layout, worker_id, time.time(), int(lease_s * 1000),
                self.limits.max_concurrent_runs, json.dumps(list(lanes)),
                json.dumps(dict(self.limits.lanes)),
                json.dumps([t.as_lua() for t in self.limits.tag_limits]), scan, mode,
                RunState.CLAIMED,
            ],
        )  # fmt: skip
        return str(result) if result else None

    def release(self, run_id: str, outcome: str, retention_s: int) -> None:
        """Free the run's slot and its place in its ordering line; keep its record a while."""
        k = self.keys
        self._scripts["RELEASE"](
            keys=[k.run(run_id), k.active, k.lease(run_id)],
            args=[self._layout, run_id, time.time(), outcome, retention_s, RunState.FINISHED],
        )

    def requeue(self, run_id: str, reason: str) -> bool:
        """Put a held run back in line at its old place."""
        k = self.keys
        return bool(
            self._scripts["REQUEUE"](
                keys=[k.run(run_id), k.active, k.lease(run_id)],
                args=[self._layout, run_id, time.time(), reason, RunState.QUEUED],
            )
        )

    def remove_queued(self, run_id: str, retention_s: int) -> bool:
        """Take a waiting run out of line (cancel); False if a worker already has it."""
        k = self.keys
        removed = self._scripts["REMOVE_QUEUED"](
            keys=[k.run(run_id)],
            args=[
                self._layout, run_id, time.time(), retention_s,
                RunState.QUEUED, RunState.FINISHED, Outcome.CANCELED,
            ],
        )  # fmt: skip
        return bool(removed)

    def renew(self, run_id: str, worker_id: str, lease_s: float) -> bool:
        return bool(
            self._scripts["RENEW"](
                keys=[self.keys.lease(run_id)], args=[worker_id, int(lease_s * 1000)]
            )
        )

    def adopt(self, run_id: str, worker_id: str, lease_s: float) -> bool:
        """Take over a run whose lease expired; False if someone holds it."""
        k = self.keys
        return bool(
            self._scripts["ADOPT"](
                keys=[k.lease(run_id), k.run(run_id)],
                args=[worker_id, int(lease_s * 1000), time.time()],
            )
        )

    def mark(self, run_id: str, **fields: Any) -> None:
        self.client.hset(self.keys.run(run_id), mapping={k: str(v) for k, v in fields.items()})

    def record(self, run_id: str) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.client.hgetall(self.keys.run(run_id)).items()}

    def states(self, run_ids: Sequence[str]) -> list[str | None]:
        """Each run's record state (a `RunState`), None if unknown; one round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hget(self.keys.run(run_id), "state")
            return [None if v is None else str(v) for v in pipe.execute()]

    def active(self) -> set[str]:
        return {str(i) for i in self.client.smembers(self.keys.active)}

    def lease_holder(self, run_id: str) -> str | None:
        value = self.client.get(self.keys.lease(run_id))
        return str(value) if value else None

    def queued(self, lane: str) -> list[str]:
        return [str(i) for i in self.client.zrange(self.keys.queued(lane), 0, -1)]

    def lanes(self) -> list[str]:
        known = {str(i) for i in self.client.smembers(self.keys.lanes)} | set(self.limits.lanes)
        return sorted(known)

    def pause(self, lane: str) -> None:
        self.client.sadd(self.keys.paused, lane)

    def resume(self, lane: str) -> None:
        self.client.srem(self.keys.paused, lane)

    def paused(self) -> set[str]:
        return {str(i) for i in self.client.smembers(self.keys.paused)}

    def heartbeat(self, worker_id: str, info: Mapping[str, Any], ttl_s: float) -> None:
        """Record a worker as alive for `ttl_s` (one MULTI: both keys or neither)."""
        payload = json.dumps({**info, "last_heartbeat": time.time()})
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.workers, worker_id, payload)
            pipe.set(self.keys.worker_alive(worker_id), "1", px=int(ttl_s * 1000))
            pipe.execute()

    def forget_worker(self, worker_id: str) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.workers, worker_id)
            pipe.delete(self.keys.worker_alive(worker_id))
            pipe.execute()

    def prune_workers(self, dead_for_s: float) -> list[str]:
        """Forget workers not alive whose last heartbeat is older than `dead_for_s` (killed
        without a clean exit); returns their ids."""
        cutoff = time.time() - dead_for_s
        gone = [
            str(w["worker_id"])
            for w in self.workers()
            if not w["alive"] and float(w.get("last_heartbeat", 0)) < cutoff
        ]
        for worker_id in gone:
            self.forget_worker(worker_id)
        return gone

    def workers(self) -> list[dict[str, Any]]:
        found = []
        for key, raw in self.client.hgetall(self.keys.workers).items():
            worker_id = str(key)
            info = json.loads(raw)
            info["worker_id"] = worker_id
            info["alive"] = bool(self.client.exists(self.keys.worker_alive(worker_id)))
            found.append(info)
        return sorted(found, key=lambda w: str(w["worker_id"]))

    def status(self) -> dict[str, Any]:
        """Per lane: queued, running, oldest wait, limit, paused; plus the workers."""
        now = time.time()
        paused = self.paused()
        lanes = []
        for lane in self.lanes():
            waiting = self.queued(lane)
            oldest = None
            if waiting:
                pipe = self.client.pipeline()
                for run_id in waiting[:500]:
                    pipe.hget(self.keys.run(run_id), "queued_at")
                stamps = [float(t) for t in pipe.execute() if t]
                oldest = round(now - min(stamps), 1) if stamps else None
            lanes.append(
                {
                    "lane": lane,
                    "queued": len(waiting),
                    "running": int(self.client.scard(self.keys.lane_active(lane))),
                    "oldest_wait_s": oldest,
                    "limit": self.limits.lanes.get(lane),
                    "paused": lane in paused,
                }
            )
        return {
            "lanes": lanes,
            "running": len(self.active()),
            "max_concurrent_runs": self.limits.max_concurrent_runs,
            "workers": self.workers(),
            "paused": sorted(paused),
        }


def default_worker_id() -> str:
    import os

    return f"{socket.gethostname()}:{os.getpid()}"
