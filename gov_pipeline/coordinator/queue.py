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


@dataclass(frozen=True)
class Lease:
    """A worker's hold on a run: the token the claim (or an adoption) gave it. Every later
    step names the token, and Redis refuses one that no longer holds the run, so a worker
    that lost its lease (cut off past its expiry) cannot free or renew what is now
    another's."""

    run_id: str
    token: str  # worker_id#n

    @property
    def worker_id(self) -> str:
        return self.token.rpartition("#")[0] or self.token


# The eight queues of the original system and their planned concurrency (the table, with
# each lane's retries and timeout, is domain/lanes.py).
DEFAULT_LANES: dict[str, int] = dict(DEFAULT_LIMITS)
# Set on a run failed because the worker executing it died. Its value is that run's id: run
# retries copy their parent's tags, and the tag must not speak for the retry.
WORKER_DIED_TAG = "gov/worker_died"
PRIORITY_TAG = "dagster/priority"


def priority_of(tags: Mapping[str, str]) -> int:
    """`dagster/priority` as an int, of any size (a value that is not an integer counts as
    0, as in Dagster's own queue)."""
    try:
        return int(tags.get(PRIORITY_TAG, "0"))
    except ValueError:
        return 0


_COMPLEMENT = str.maketrans("0123456789", "9876543210")


def priority_key(priority: int) -> str:
    """A string whose byte order is the claim order of priorities: higher first, exact at
    any size. It encodes -priority: a sign letter (N before P), the digit count (for N,
    complemented, so that longer comes first), the digits (for N, complemented)."""
    value = -priority
    digits = str(abs(value))
    if value >= 0:
        return f"P{len(digits):04d}{digits}"
    return f"N{9999 - len(digits):04d}{digits.translate(_COMPLEMENT)}"


def run_of_member(member: str) -> str:
    """The run id of a lane queue's member (`<priority key><seq>|<run id>`)."""
    return member.split("|", 1)[1]


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

    def as_dagster(self) -> dict[str, Any]:
        """The entry in Dagster's form again (what `parse` reads)."""
        data: dict[str, Any] = {"key": self.key, "limit": self.limit}
        if self.per_unique:
            data["value"] = {"applyLimitPerUniqueValue": True}
        elif self.value is not None:
            data["value"] = self.value
        return data

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

    SCRIPTS = (
        "ENQUEUE", "CLAIM", "TAKE", "START", "RELEASE", "REQUEUE", "RENEW", "HOLDER", "ADOPT",
        "REMOVE_QUEUED", "SYNC_OUTSIDE", "BEAT",
    )  # fmt: skip

    def __init__(self, client: redis.Redis, prefix: str, limits: QueueLimits) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.limits = limits
        self._scripts = {
            name: client.register_script(getattr(scripts, name)) for name in self.SCRIPTS
        }

    @classmethod
    def from_url(cls, url: str, prefix: str, limits: QueueLimits) -> RunQueue:
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
        )
        return cls(client, prefix, limits)

    def close(self) -> None:
        """Close the client's connections (all of its pool's)."""
        self.client.close()
        self.client.connection_pool.disconnect()

    def enqueue(
        self,
        run_id: str,
        *,
        lane: str,
        priority: int,
        order: str | None,
        tags: Mapping[str, str],
        pooled: bool = False,
    ) -> bool:
        """Put a run in line (no-op if it is already queued or held). True if added.
        `pooled`: some of its ops use pools (Dagster's `run_op_concurrency`)."""
        k = self.keys
        meta = {"lane": lane, "order": order or "", "tags": dict(tags)}
        keys = [k.seq, k.queued(lane), k.run(run_id), k.lanes, k.meta, k.heads, k.pooled]
        added = self._scripts["ENQUEUE"](
            keys=keys + ([k.order(order)] if order else []),
            args=[
                run_id, lane, str(priority), priority_key(priority), order or "",
                json.dumps(dict(tags)), time.time(), json.dumps(meta), "1" if pooled else "",
                RunState.QUEUED, RunState.FINISHED,
            ],
        )  # fmt: skip
        return bool(added)

    def claim(
        self,
        worker_id: str,
        lanes: Sequence[str],
        lease_s: float,
        *,
        blocked: Sequence[str] = (),
        scan: int = 500,
    ) -> Lease | None:
        """Take the next runnable run for `worker_id` from `lanes` (every known lane if
        empty), honouring every limit and skipping `blocked` runs; None if none."""
        k = self.keys
        names = list(lanes) or self.lanes()
        lane_keys = [key for lane in names for key in (k.queued(lane), k.lane_active(lane))]
        result = self._scripts["CLAIM"](
            keys=[
                k.active, k.paused, k.meta, k.outside, k.heads, k.leases, k.holders, k.fence,
                *lane_keys,
            ],
            args=[
                worker_id, int(lease_s * 1000), self.limits.max_concurrent_runs,
                json.dumps(names), json.dumps(dict(self.limits.lanes)),
                json.dumps([t.as_lua() for t in self.limits.tag_limits]), scan,
                json.dumps(list(blocked)), time.time(),
            ],
        )  # fmt: skip
        return Lease(str(result[0]), str(result[1])) if result else None

    def take(self, lease: Lease, mode: str) -> bool:
        """Record the claimed run as this lease's worker's; False if it lost the lease or
        the run was canceled since the claim."""
        args: list[str | float] = [
            lease.run_id, lease.token, time.time(), mode, RunState.QUEUED, RunState.CLAIMED,
            lease.worker_id,
        ]  # fmt: skip
        taken = self._scripts["TAKE"](
            keys=[self.keys.run(lease.run_id), self.keys.holders], args=args
        )
        return bool(taken)

    def start(self, lease: Lease) -> bool:
        """Mark the run started, just before its launch; False if it lost the lease or was
        canceled. From then on a cancel terminates the run instead."""
        started = self._scripts["START"](
            keys=[self.keys.run(lease.run_id), self.keys.holders],
            args=[
                lease.run_id, lease.token, time.time(), socket.gethostname(),
                RunState.CLAIMED, RunState.STARTED,
            ],
        )  # fmt: skip
        return bool(started)

    def route(self, run_id: str) -> tuple[str | None, str, str]:
        """A run's lane, queue member and ordering value (fixed from its enqueue on), from
        what the claim reads, else its record: (None, "", "") if Redis has neither."""
        raw = self.client.hget(self.keys.meta, run_id)
        if raw:
            meta = json.loads(raw)
            return str(meta["lane"]), str(meta.get("member", "")), str(meta.get("order", ""))
        record = self.record(run_id)
        if "lane" not in record:
            return None, "", ""
        return record["lane"], record.get("member", ""), record.get("order", "")

    def _held_keys(self, run_id: str) -> tuple[list[str], str, str]:
        """The KEYS of RELEASE and REMOVE_QUEUED for this run, its member and order value."""
        k = self.keys
        lane, member, order = self.route(run_id)
        keys = [k.run(run_id), k.active, k.meta, k.leases, k.holders, k.pooled, k.heads]
        if lane is not None:
            keys += [k.lane_active(lane), k.queued(lane)]
            if order:
                keys.append(k.order(order))
        return keys, member, order

    def release(
        self, run_id: str, outcome: str, retention_s: int, token: str | None = None
    ) -> bool:
        """Free the run's slot and its place in its ordering line; keep its record a while.
        Given the holder's `token`, False (nothing done) if that token no longer holds it."""
        keys, member, order = self._held_keys(run_id)
        released = self._scripts["RELEASE"](
            keys=keys,
            args=[
                run_id, time.time(), outcome, retention_s, member, order, RunState.FINISHED,
                token or "",
            ],
        )  # fmt: skip
        return bool(released)

    def requeue(
        self, run_id: str, reason: str, not_before: float | None = None, token: str | None = None
    ) -> bool:
        """Put a held run back in line at its old place, not to be claimed before
        `not_before` (seconds since the epoch) if given. Given the holder's `token`, False
        (nothing done) if that token no longer holds it."""
        k = self.keys
        lane, member, _ = self.route(run_id)
        if lane is None or not member:
            return False
        queued = self._scripts["REQUEUE"](
            keys=[
                k.run(run_id), k.active, k.meta, k.leases, k.holders,
                k.lane_active(lane), k.queued(lane),
            ],
            args=[
                run_id, time.time(), reason, member,
                "" if not_before is None else not_before, RunState.QUEUED, token or "",
            ],
        )  # fmt: skip
        return bool(queued)

    def remove_queued(self, run_id: str, retention_s: int) -> bool:
        """Take a run out of line (cancel) unless a worker has started it: False then."""
        keys, member, order = self._held_keys(run_id)
        removed = self._scripts["REMOVE_QUEUED"](
            keys=keys,
            args=[
                run_id, time.time(), retention_s, member, order,
                RunState.QUEUED, RunState.CLAIMED, RunState.FINISHED, Outcome.CANCELED,
            ],
        )  # fmt: skip
        return bool(removed)

    def renew(self, lease: Lease, lease_s: float) -> bool:
        """Extend the lease; False if its token no longer holds the run (True, and nothing
        to extend, if the run was released for it: found ended by a reconciliation)."""
        keys = [self.keys.leases, self.keys.holders, self.keys.run(lease.run_id)]
        args: list[str | int] = [lease.run_id, lease.token, int(lease_s * 1000), RunState.FINISHED]
        return bool(self._scripts["RENEW"](keys=keys, args=args))

    def adopt(self, run_id: str, worker_id: str, lease_s: float) -> Lease | None:
        """Take over a run whose lease expired, with a new token (the old holder is refused
        from now on); None if someone holds it."""
        k = self.keys
        token = self._scripts["ADOPT"](
            keys=[k.leases, k.holders, k.run(run_id), k.fence],
            args=[run_id, worker_id, int(lease_s * 1000), time.time()],
        )
        return Lease(run_id, str(token)) if token else None

    def lease_token(self, run_id: str) -> str | None:
        """The token whose lease on the run has not expired, or None."""
        value = self._scripts["HOLDER"](keys=[self.keys.leases, self.keys.holders], args=[run_id])
        return str(value) if value else None

    def lease_holder(self, run_id: str) -> str | None:
        """The worker whose lease on the run has not expired, or None."""
        token = self.lease_token(run_id)
        return None if token is None else Lease(run_id, token).worker_id

    def sync_outside(self, runs: Mapping[str, Mapping[str, Any]]) -> int:
        """Count `runs` (run id -> {lane, tags}: run storage's runs in progress) against
        the limits, but for those holding a slot here; returns how many that is."""
        pairs = [[run_id, json.dumps(dict(meta))] for run_id, meta in runs.items()]
        return int(
            self._scripts["SYNC_OUTSIDE"](
                keys=[self.keys.active, self.keys.outside], args=[json.dumps(pairs)]
            )
        )

    def outside(self) -> dict[str, dict[str, Any]]:
        """The runs in progress counted from run storage (see `sync_outside`)."""
        return {str(k): json.loads(v) for k, v in self.client.hgetall(self.keys.outside).items()}

    def sync_due(self, worker_id: str, interval_s: float) -> bool:
        """Whether this worker is the one to sync with run storage in this interval (the
        first to ask gets it)."""
        px = max(1, int(interval_s * 1000))
        return bool(self.client.set(self.keys.sync, worker_id, nx=True, px=px))

    def pooled(self) -> set[str]:
        """The runs waiting or held whose ops use pools (empty, in one round trip, when no
        run does)."""
        return {str(i) for i in self.client.smembers(self.keys.pooled)}

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

    def queued(self, lane: str) -> list[str]:
        """The runs waiting in a lane, in claim order."""
        return [run_of_member(str(m)) for m in self.client.zrange(self.keys.queued(lane), 0, -1)]

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

    def beat(self, run_id: str, where: str, ttl_s: float) -> None:
        """The run's own heartbeat from its process (`where`: "host pid"), alive for
        `ttl_s`. Its record, while the run holds a slot, remembers that the run beats: from
        then on, a lapsed beat means its process is gone (`beat_lapsed`)."""
        keys = [self.keys.run_beat(run_id), self.keys.run(run_id)]
        self._scripts["BEAT"](keys=keys, args=[where, int(ttl_s * 1000)])

    def beat_lapsed(self, run_id: str) -> str | None:
        """Where the run's process was ("host pid") if it beat and has stopped beating;
        None while it beats, or if it never did (a job that does not beat)."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.run(run_id), "beats")
            pipe.exists(self.keys.run_beat(run_id))
            where, beating = pipe.execute()
        return None if where is None or beating else str(where)

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
        """Per lane: queued, running (holding a slot here, or in progress in run storage
        outside the queue: `outside` of them), oldest wait, limit, paused; plus the workers."""
        now = time.time()
        paused = self.paused()
        outside = [str(meta.get("lane")) for meta in self.outside().values()]
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
                    "running": int(self.client.scard(self.keys.lane_active(lane)))
                    + outside.count(lane),
                    "outside": outside.count(lane),
                    "oldest_wait_s": oldest,
                    "limit": self.limits.lanes.get(lane),
                    "paused": lane in paused,
                }
            )
        return {
            "lanes": lanes,
            "running": len(self.active()) + len(outside),
            "outside": len(outside),
            "max_concurrent_runs": self.limits.max_concurrent_runs,
            "workers": self.workers(),
            "paused": sorted(paused),
        }


def delete_queue(url: str, prefix: str) -> int:
    """Delete every key of the queue under `prefix` (a demo's, a tour's, a test's own);
    returns how many."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{Keys(prefix).head}:*", count=1000))
        for first in range(0, len(keys), 1000):
            client.delete(*keys[first : first + 1000])
        return len(keys)
    finally:
        client.close()


def default_worker_id() -> str:
    import os

    return f"{socket.gethostname()}:{os.getpid()}"
