"""Adaptive batching of changes into runs (pure).

While the backlog is small every change gets its own run (best visibility, lowest
latency). When it grows, changes are packed into batches: all changes of one entity go in
the same batch, in order, and a batch holds up to `batch_size` changes (an entity with more
changes than that gets batches of its own, in order). A run holds the changes of one lane
only (the lane of their entity type: a risk's changes go to `assessment`), so each lane's
limit counts its own work.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PendingChange:
    id: int
    tenant_id: str
    entity_type: str
    entity_id: str
    priority: int = 0

    @property
    def entity_key(self) -> tuple[str, str, str]:
        return (self.tenant_id, self.entity_type, self.entity_id)


@dataclass(frozen=True)
class BatchingPolicy:
    # Up to this many changes in a tick: one run per change.
    single_run_threshold: int = 4
    # Above it: batches of at most this many changes.
    batch_size: int = 1000


@dataclass(frozen=True)
class PlannedRun:
    changes: tuple[PendingChange, ...]
    lane: str = "policy"

    @property
    def change_ids(self) -> list[int]:
        return [c.id for c in self.changes]

    @property
    def run_key(self) -> str:
        """Deterministic: the same changes always give the same key."""
        ids = self.change_ids
        if len(ids) == 1:
            return f"change-{ids[0]}"
        digest = hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()[:10]
        return f"changes-{ids[0]}-{ids[-1]}-{len(ids)}-{digest}"

    @property
    def entity_keys(self) -> list[tuple[str, str, str]]:
        return list(dict.fromkeys(c.entity_key for c in self.changes))

    @property
    def priority(self) -> int:
        return max(c.priority for c in self.changes)


def compact_ids(ids: Sequence[int], limit: int = 1000) -> str:
    """`1-4,7,9-10` for [1,2,3,4,7,9,10]; cut with `…` past `limit` characters."""
    parts: list[str] = []
    start = prev = None
    for i in sorted(ids):
        if start is None:
            start = prev = i
        elif prev is not None and i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if start != prev else str(start))
    text = ",".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plan_runs(
    changes: Sequence[PendingChange],
    policy: BatchingPolicy,
    lane_of: Callable[[str], str] = lambda entity_type: "policy",
) -> list[PlannedRun]:
    """Split `changes` (in id order) into runs, per the policy, each run in the lane
    `lane_of` gives its entity type."""
    if len(changes) <= policy.single_run_threshold:
        return [PlannedRun((c,), lane_of(c.entity_type)) for c in changes]
    by_lane: dict[str, list[PendingChange]] = {}
    for change in changes:
        by_lane.setdefault(lane_of(change.entity_type), []).append(change)
    return [run for lane, part in by_lane.items() for run in _batches(part, policy, lane)]


def _batches(
    changes: Sequence[PendingChange], policy: BatchingPolicy, lane: str
) -> list[PlannedRun]:
    groups: dict[tuple[str, str, str], list[PendingChange]] = {}
    for change in changes:
        groups.setdefault(change.entity_key, []).append(change)
    runs: list[PlannedRun] = []
    current: list[PendingChange] = []
    for group in groups.values():
        if len(group) > policy.batch_size:  # one busy entity: its own batches, in order
            for i in range(0, len(group), policy.batch_size):
                runs.append(PlannedRun(tuple(group[i : i + policy.batch_size]), lane))
            continue
        if len(current) + len(group) > policy.batch_size:
            runs.append(PlannedRun(tuple(sorted(current, key=lambda c: c.id)), lane))
            current = []
        current.extend(group)
    if current:
        runs.append(PlannedRun(tuple(sorted(current, key=lambda c: c.id)), lane))
    return runs
