"""Redis key names, in one place. `{p}` is the configured key prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    @property
    def seq(self) -> str:
        """Counter giving each submitted run its place in line."""
        return f"{self.prefix}:rq:seq"

    def queued(self, lane: str) -> str:
        """ZSET of runs waiting in a lane, scored by (-priority, seq): lowest first."""
        return f"{self.prefix}:rq:queued:{lane}"

    def run(self, run_id: str) -> str:
        """HASH of one run's state and timestamps (kept `retention` seconds after the end)."""
        return f"{self.prefix}:rq:run:{run_id}"

    def order(self, value: str) -> str:
        """LIST of the runs sharing an ordering-tag value, in submit order; only the head runs."""
        return f"{self.prefix}:rq:order:{value}"

    @property
    def active(self) -> str:
        """SET of runs holding a slot (claimed, launched or executing)."""
        return f"{self.prefix}:rq:active"

    def lane_active(self, lane: str) -> str:
        """SET of a lane's runs holding a slot."""
        return f"{self.prefix}:rq:lane_active:{lane}"

    def lease(self, run_id: str) -> str:
        """A claimed run's lease: the worker id, with a TTL the worker's heartbeat renews."""
        return f"{self.prefix}:rq:lease:{run_id}"

    @property
    def lanes(self) -> str:
        """SET of every lane that has seen a run."""
        return f"{self.prefix}:rq:lanes"

    @property
    def paused(self) -> str:
        """SET of paused lanes (nothing is claimed from them)."""
        return f"{self.prefix}:rq:paused"

    @property
    def workers(self) -> str:
        """HASH worker id -> JSON (host, pid, mode, lanes, last heartbeat)."""
        return f"{self.prefix}:rq:workers"

    def worker_alive(self, worker_id: str) -> str:
        """A worker's liveness key, with a TTL its heartbeat renews."""
        return f"{self.prefix}:rq:worker:{worker_id}"
