"""Redis key names, in one place. Every key starts with the configured prefix.

The keys of one lane, run, ordering value or worker come from templates with one slot,
`%s`: Python fills them with `template % value`, the Lua scripts (which get `templates`
as ARGV) with `string.format(template, value)`, so the layout is spelt here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Keys:
    prefix: str

    @cached_property
    def templates(self) -> dict[str, str]:
        """Template of each per-lane, per-run, per-value and per-worker key, by the name of
        its method here. A `%` of the prefix is doubled, so it stays a `%` when filled."""
        head = self.prefix.replace("%", "%%")
        return {
            "queued": f"{head}:rq:queued:%s",
            "run": f"{head}:rq:run:%s",
            "order": f"{head}:rq:order:%s",
            "lane_active": f"{head}:rq:lane_active:%s",
            "lease": f"{head}:rq:lease:%s",
            "worker_alive": f"{head}:rq:worker:%s",
        }

    @property
    def seq(self) -> str:
        """Counter giving each submitted run its place in line."""
        return f"{self.prefix}:rq:seq"

    def queued(self, lane: str) -> str:
        """ZSET of runs waiting in a lane, scored by (-priority, seq): lowest first."""
        return self.templates["queued"] % lane

    def run(self, run_id: str) -> str:
        """HASH of one run's state and timestamps (kept `retention` seconds after the end)."""
        return self.templates["run"] % run_id

    def order(self, value: str) -> str:
        """LIST of the runs sharing an ordering-tag value, in submit order; only the head runs."""
        return self.templates["order"] % value

    @property
    def active(self) -> str:
        """SET of runs holding a slot (claimed, launched or executing)."""
        return f"{self.prefix}:rq:active"

    def lane_active(self, lane: str) -> str:
        """SET of a lane's runs holding a slot."""
        return self.templates["lane_active"] % lane

    def lease(self, run_id: str) -> str:
        """A claimed run's lease: the worker id, with a TTL the worker's heartbeat renews."""
        return self.templates["lease"] % run_id

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
        return self.templates["worker_alive"] % worker_id
