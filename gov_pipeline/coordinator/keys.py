"""Redis key names, in one place. Every key starts with the configured prefix in braces.

The braces are a Redis Cluster hash tag: every key of one queue hashes to the same slot, so
the Lua scripts may touch several of them at once. Each script is given every key it touches
in KEYS (a test parses the scripts for it): the keys of one lane, run or ordering value come
from the methods here, filled in Python before the call.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix or "}" in self.prefix:
            raise ValueError(
                f"Redis key prefix {self.prefix!r}: it must be non-empty and hold no '}}' "
                "(it is the keys' hash tag, between braces)"
            )

    @property
    def head(self) -> str:
        """`{prefix}:rq`: the hash tag and the queue's namespace."""
        return f"{{{self.prefix}}}:rq"

    @property
    def seq(self) -> str:
        """Counter giving each submitted run its place in line."""
        return f"{self.head}:seq"

    def queued(self, lane: str) -> str:
        """ZSET of runs waiting in a lane, all scored 0 and so in the byte order of their
        members: the priority, then the submit sequence, then the run id (`queue.member`)."""
        return f"{self.head}:queued:{lane}"

    def run(self, run_id: str) -> str:
        """HASH of one run's state and timestamps (kept `retention` seconds after the end)."""
        return f"{self.head}:run:{run_id}"

    def order(self, value: str) -> str:
        """LIST of the runs sharing an ordering-tag value, in submit order; only the head runs."""
        return f"{self.head}:order:{value}"

    @property
    def heads(self) -> str:
        """HASH ordering value -> the run at the head of its line (the one that may run)."""
        return f"{self.head}:heads"

    @property
    def meta(self) -> str:
        """HASH run id -> JSON of what a claim reads (lane, member, order, tags, pools,
        not_before), for each run waiting or holding a slot."""
        return f"{self.head}:meta"

    @property
    def active(self) -> str:
        """SET of runs holding a slot (claimed, launched or executing)."""
        return f"{self.head}:active"

    def lane_active(self, lane: str) -> str:
        """SET of a lane's runs holding a slot."""
        return f"{self.head}:lane_active:{lane}"

    @property
    def outside(self) -> str:
        """HASH run id -> JSON (lane, tags) of the runs in progress in Dagster's run storage
        that hold no slot here (launched by the fallback, before a flush, by anything else);
        rewritten by each storage sync, counted by every claim."""
        return f"{self.head}:outside"

    @property
    def leases(self) -> str:
        """ZSET run id -> when its lease expires (ms since the epoch)."""
        return f"{self.head}:leases"

    @property
    def holders(self) -> str:
        """HASH run id -> the lease token holding it (`worker_id#n`)."""
        return f"{self.head}:holders"

    @property
    def fence(self) -> str:
        """Counter of lease tokens: each claim and each adoption takes the next number, so a
        token is never given twice and a holder that lost its lease stays refused."""
        return f"{self.head}:fence"

    @property
    def pooled(self) -> str:
        """SET of the runs waiting or holding a slot whose ops use pools (Dagster's op
        concurrency): while it is empty, a claim never looks at pools."""
        return f"{self.head}:pooled"

    @property
    def lanes(self) -> str:
        """SET of every lane that has seen a run."""
        return f"{self.head}:lanes"

    @property
    def paused(self) -> str:
        """SET of paused lanes (nothing is claimed from them)."""
        return f"{self.head}:paused"

    @property
    def sync(self) -> str:
        """Token of the storage sync: whoever sets it does the sync of this interval."""
        return f"{self.head}:sync"

    @property
    def workers(self) -> str:
        """HASH worker id -> JSON (host, pid, mode, lanes, last heartbeat)."""
        return f"{self.head}:workers"

    def worker_alive(self, worker_id: str) -> str:
        """A worker's liveness key, with a TTL its heartbeat renews."""
        return f"{self.head}:worker:{worker_id}"

    def run_beat(self, run_id: str) -> str:
        """A run's liveness key ("host pid"), with a TTL its own process renews."""
        return f"{self.head}:beat:{run_id}"
