"""RedisRunCoordinator: Dagster's RunCoordinator contract, with Redis as the queue.

`submit_run` records the enqueue event first (status QUEUED), then puts the run in line in
Redis; a `gov-pipeline worker` claims and launches it. If Redis cannot be reached at
submit, the run is launched directly when the limits allow it, counted from run storage
(fallback `launch`, the default, with an engine event saying so; otherwise it stays QUEUED
until a worker puts it in line), or fails (fallback `fail`). The config takes Dagster's
QueuedRunCoordinator keys with Dagster's schema (contract.py) and this queue's own.

It is a QueuedRunCoordinator for everything that asks (the UI's Concurrency page, the
instance's concurrency config), but no QueuedRunCoordinator behaviour is inherited: every
method is its own. Dagster starts its dequeuer for any QueuedRunCoordinator, which would
launch the same runs a second time; the instance class `GovDagsterInstance`
(coordinator/instance.py) leaves it out, and this coordinator refuses any instance that
would start it.
"""

# No "from __future__ import annotations": Dagster's config machinery reads this class.

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import redis
from dagster import (
    DagsterEvent,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Field,
    IntSource,
    Noneable,
    Permissive,
    QueuedRunCoordinator,
    StringSource,
    SubmitRunContext,
)

from gov_pipeline.config import load_settings
from gov_pipeline.coordinator import contract
from gov_pipeline.coordinator.queue import (
    DEFAULT_LANES,
    LANE_TAG,
    QueueLimits,
    RunQueue,
    TagLimit,
    lane_of,
    priority_of,
)
from gov_pipeline.coordinator.states import ENDED, RunState
from gov_pipeline.dagster_internals import ConfigurableClassData, RunQueueConfig
from gov_pipeline.domain import lanes as lane_table

log = logging.getLogger(__name__)

FALLBACKS = ("launch", "fail")
QUEUE_DAEMON = "QUEUED_RUN_COORDINATOR"  # Dagster's dequeuer, which must not run beside us
CANCEL_WAIT_S = 10.0  # how long a cancel waits for a worker that is launching the run


class RedisRunCoordinator(QueuedRunCoordinator):
    """Queue runs in Redis for `gov-pipeline worker` processes to claim and launch.

    Built by Dagster from dagster.yaml through `from_config_value`, which fills in the Redis
    URL and key prefix from the settings when the file leaves them out; constructed directly,
    it is given every value and reads no environment.
    """

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        *,
        redis_url: str,
        key_prefix: str,
        max_concurrent_runs: int = 10,
        tag_concurrency_limits: list[Mapping[str, Any]] | None = None,
        lanes: Mapping[str, int] | None = None,
        default_lane: str | None = None,
        ordering_tag: str = "gov/entity",
        unordered_values: list[str] | None = None,
        lease_seconds: int = 30,
        fallback: str = "launch",
        retention_seconds: int = 86_400,
        lane_rules: Mapping[str, Any] | None = None,
        storage_sync_seconds: float = 1.0,
        **dagster_keys: Any,
    ) -> None:
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        unknown = set(dagster_keys) - set(contract.dagster_fields())
        if unknown:
            raise TypeError(f"unknown run coordinator keys: {sorted(unknown)}")
        super().__init__(inst_data=inst_data)  # Dagster's fields at their defaults: see below
        self._inst_data = inst_data
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.default_lane = default_lane or lane_table.UNTAGGED_LANE
        self.ordering_tag = ordering_tag
        self.unordered_values = frozenset(unordered_values or ["multiple", ""])
        self.lease_seconds = lease_seconds
        self.fallback = fallback
        self.retention_seconds = retention_seconds
        self.storage_sync_seconds = float(storage_sync_seconds)
        self.settings = contract.QueueSettings.from_config(dagster_keys)
        self.limits = _limits(
            max_concurrent_runs, tag_concurrency_limits, lanes, "run_coordinator.config."
        )
        # Retries and timeouts per lane: the table of domain/lanes.py with these overrides.
        self.rules = lane_table.lane_rules(lane_rules)
        self._queue: RunQueue | None = None

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    # What QueuedRunCoordinator exposes of its config, from this one's (its dequeue_*
    # properties keep Dagster's defaults: only Dagster's dequeuer reads them, and it never
    # runs beside this coordinator).
    @property
    def should_block_op_concurrency_limited_runs(self) -> bool:
        return self.settings.block_op_concurrency_limited_runs

    @property
    def op_concurrency_slot_buffer(self) -> int:
        return self.settings.op_concurrency_slot_buffer

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            **contract.dagster_fields(),
            "redis_url": Field(StringSource, is_required=False),
            "key_prefix": Field(StringSource, is_required=False),
            "lanes": Field(Permissive(), is_required=False),  # type: ignore[no-untyped-call]
            "default_lane": Field(Noneable(str), is_required=False),
            "ordering_tag": Field(str, is_required=False, default_value="gov/entity"),
            "unordered_values": Field(Noneable(list), is_required=False),
            "lease_seconds": Field(IntSource, is_required=False, default_value=30),
            "fallback": Field(str, is_required=False, default_value="launch"),
            "retention_seconds": Field(IntSource, is_required=False, default_value=86_400),
            "lane_rules": Field(Permissive(), is_required=False),  # type: ignore[no-untyped-call]
            "storage_sync_seconds": Field(float, is_required=False, default_value=1.0),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> "RedisRunCoordinator":
        """The coordinator dagster.yaml describes; a `redis_url` or `key_prefix` it leaves
        out (or empty) is GOV_PIPELINE_REDIS_URL / GOV_PIPELINE_REDIS_PREFIX (or their
        defaults), so that every process sees the same queue.

        Raises:
            ConfigurationError: a GOV_PIPELINE_* variable is malformed.
            ValueError: `fallback` is neither `launch` nor `fail`; a limit is below -1.
            InvalidInputError: a `lane_rules` entry is malformed.
        """
        settings = load_settings()
        values = dict(config_value)
        values["redis_url"] = values.get("redis_url") or settings.redis_url
        values["key_prefix"] = values.get("key_prefix") or settings.redis_prefix
        return cls(inst_data=inst_data, **values)

    def register_instance(self, instance: DagsterInstance) -> None:
        """Dagster's instance-level `concurrency: runs:` settings, when given, override
        `max_concurrent_runs` and `tag_concurrency_limits`, as they do Dagster's.

        Raises:
            RuntimeError: the instance would start Dagster's own dequeuer beside the workers.
        """
        super().register_instance(instance)
        if not instance.is_ephemeral and QUEUE_DAEMON in instance.get_required_daemon_types():
            raise RuntimeError(
                "RedisRunCoordinator needs `instance_class: {module: "
                "gov_pipeline.coordinator.instance, class: GovDagsterInstance}` in dagster.yaml: "
                f"with the instance class {type(instance).__name__}, Dagster's daemon would "
                "start its own queue daemon and launch the same runs a second time"
            )
        runs = (instance.get_settings("concurrency") or {}).get("runs") or {}
        if "max_concurrent_runs" in runs or "tag_concurrency_limits" in runs:
            merged = _limits(
                runs.get("max_concurrent_runs", self.limits.max_concurrent_runs),
                runs.get("tag_concurrency_limits"),
                self.limits.lanes,
                "concurrency.runs.",
            )
            if "tag_concurrency_limits" not in runs:
                merged = replace(merged, tag_limits=self.limits.tag_limits)
            self.limits = merged
            if self._queue is not None:
                self._queue.limits = merged

    @property
    def queue(self) -> RunQueue:
        if self._queue is None:
            self._queue = RunQueue.from_url(self.redis_url, self.key_prefix, self.limits)
        return self._queue

    def dispose(self) -> None:
        if self._queue is not None:
            self._queue.close()
            self._queue = None

    def counted_limits(self) -> list[dict[str, Any]]:
        """Every limit but the global one in Dagster's `tag_concurrency_limits` form: each
        lane as a limit on `gov/queue` with its value, the tag limits, and the ordering tag
        as one run per value (unordered values are left out of the tags counted,
        `counted_tags`). Limits of -1 (none) are left out."""
        lanes = [
            {"key": LANE_TAG, "value": lane, "limit": limit}
            for lane, limit in sorted(self.limits.lanes.items())
            if limit >= 0
        ]
        tags = [t.as_dagster() for t in self.limits.tag_limits if t.limit >= 0]
        order = {"key": self.ordering_tag, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        return [*lanes, *tags, order]

    def counted_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        """The tags `counted_limits` looks at: the limit tags, the lane, the ordering value
        if it is ordered."""
        counted = {**self.limit_tags(tags), LANE_TAG: self.lane_of(tags)}
        if self.order_of(tags) is None:
            counted.pop(self.ordering_tag, None)
        return counted

    def get_run_queue_config(self) -> RunQueueConfig:
        """The limits in the form the UI shows them (coordinator/instance.py)."""
        return RunQueueConfig(
            max_concurrent_runs=self.limits.max_concurrent_runs,
            tag_concurrency_limits=self.counted_limits(),
            max_user_code_failure_retries=self.settings.max_user_code_failure_retries,
            user_code_failure_retry_delay=self.settings.user_code_failure_retry_delay,
            should_block_op_concurrency_limited_runs=self.settings.block_op_concurrency_limited_runs,
            op_concurrency_slot_buffer=self.settings.op_concurrency_slot_buffer,
            explicitly_enabled_concurrency_run_blocking=False,
        )

    def lane_of(self, tags: Mapping[str, str]) -> str:
        return lane_of(tags, self.default_lane)

    def rule_of(self, tags: Mapping[str, str]) -> lane_table.LaneRule:
        """The retries and timeout a run with these tags goes by: its own rule tags, else its
        lane's rule as configured here."""
        return lane_table.rule_of_run(tags, self.rules, self.default_lane)

    def order_of(self, tags: Mapping[str, str]) -> str | None:
        value = tags.get(self.ordering_tag)
        return None if value is None or value in self.unordered_values else value

    def limit_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        """The tags the limits look at (stored with the run in Redis)."""
        wanted = {t.key for t in self.limits.tag_limits} | {self.ordering_tag, LANE_TAG}
        return {k: v for k, v in tags.items() if k in wanted}

    def in_progress_entry(self, run: DagsterRun) -> dict[str, Any]:
        """What a claim counts of a run in progress outside the queue."""
        return {"lane": self.lane_of(run.tags), "tags": self.limit_tags(run.tags)}

    def enqueue(self, run: DagsterRun) -> bool:
        """Put a QUEUED run in line in Redis (also used to rebuild the queue)."""
        tags = run.tags
        return self.queue.enqueue(
            run.run_id,
            lane=self.lane_of(tags),
            priority=priority_of(tags),
            order=self.order_of(tags),
            tags=self.limit_tags(tags),
            pooled=run.run_op_concurrency is not None,
        )

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if run.status != DagsterRunStatus.NOT_STARTED:
            log.warning("submit_run for run %s in status %s: nothing to do", run.run_id, run.status)
            return self._reload(run.run_id)
        self._stamp_tags(run)
        # The enqueue event comes first: a worker must never see a run that is not QUEUED.
        self._instance.report_dagster_event(DagsterEvent.job_enqueue(run), run_id=run.run_id)
        try:
            self.enqueue(self._reload(run.run_id))
        except redis.RedisError as exc:
            if self.fallback == "fail":
                raise
            self._fall_back(self._reload(run.run_id), context, exc)
        return self._reload(run.run_id)

    def _fall_back(self, run: DagsterRun, context: SubmitRunContext, exc: Exception) -> None:
        """Redis is down at submit: launch the run directly if the limits allow it, counted
        from run storage; otherwise leave it QUEUED for the workers' storage sync."""
        why = f"Redis unreachable at submit ({type(exc).__name__}: {exc}); fallback 'launch'"
        blocker = contract.fallback_blocker(
            run,
            contract.in_progress_runs(self._instance),
            self.limits.max_concurrent_runs,
            self.counted_limits(),
            lambda other: self.counted_tags(other.tags),
        )
        if blocker is not None:
            self._instance.report_engine_event(
                f"{why}: {blocker}, so the run stays QUEUED; a worker puts it in line "
                "when Redis is back",
                run,
            )
            return
        self._instance.report_engine_event(
            f"{why}: launching this run directly, outside the Redis queue (within the limits, "
            "counted from run storage)",
            run,
        )
        self._instance.launch_run(run.run_id, context.workspace)

    def _stamp_tags(self, run: DagsterRun) -> None:
        """Give a run without a lane tag the lane its ops all carry (an asset job's run,
        launched from the Catalog), and the run its lane's rule as tags (those it does not
        carry already: set by whoever launched it, or copied from the run a retry
        re-executes), so that its ops and its worker go by the rule configured here."""
        missing: dict[str, str] = {}
        if LANE_TAG not in run.tags:
            lane = self._lane_of_ops(run)
            if lane is not None:
                missing[LANE_TAG] = lane
        rule = lane_table.lane_rule(self.lane_of({**run.tags, **missing}), self.rules)
        missing.update({k: v for k, v in rule.tags().items() if k not in run.tags})
        if missing:
            self._instance.add_run_tags(run.run_id, missing)

    def _lane_of_ops(self, run: DagsterRun) -> str | None:
        """The `gov/queue` op tag all the steps the run executes share, if they do."""
        if run.execution_plan_snapshot_id is None:
            return None
        plan = self._instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        wanted = set(plan.step_keys_to_execute)
        lanes = {(step.tags or {}).get(LANE_TAG) for step in plan.steps if step.key in wanted}
        return next(iter(lanes)) if len(lanes) == 1 else None

    def cancel_run(self, run_id: str) -> bool:
        """Cancel a queued run, or terminate a started one: the run launcher terminates a
        launched run; a run executing inside an execute-mode worker is marked CANCELING,
        which that worker watches for, and it stops the run's process (True: requested).

        A worker that claimed the run launches it only if no cancel came first; a cancel
        that comes after the worker has started it waits for the launch, then terminates.
        """
        run = self._instance.get_run_by_id(run_id)
        if run is None:
            return False
        if run.status == DagsterRunStatus.QUEUED:
            if not self._started_by_worker(run_id):
                self._instance.report_run_canceling(run, message="Canceling run from the queue.")
                self._instance.report_run_canceled(run)
                return True
            run = self._past_queued(run_id)
        if run.status in ENDED:
            return False
        worker = self._executing_worker(run_id)
        if worker is not None:
            self._instance.report_run_canceling(
                run, message=f"Terminating: worker {worker}, executing this run, stops it."
            )
            return True
        return bool(self._instance.run_launcher.terminate(run_id))

    def _started_by_worker(self, run_id: str) -> bool:
        """Take the run out of line unless a worker has started it; whether one has."""
        try:
            if self.queue.remove_queued(run_id, self.retention_seconds):
                return False
            return self.queue.record(run_id).get("state") == RunState.STARTED
        except redis.RedisError as exc:  # the worker re-checks the status before launching
            log.warning("could not remove run %s from Redis: %s", run_id, exc)
            return False

    def _past_queued(self, run_id: str) -> DagsterRun:
        """The run once its worker has moved it past QUEUED (or as it is after a while)."""
        deadline = time.monotonic() + CANCEL_WAIT_S
        run = self._reload(run_id)
        while run.status == DagsterRunStatus.QUEUED and time.monotonic() < deadline:
            time.sleep(0.05)
            run = self._reload(run_id)
        return run

    def _executing_worker(self, run_id: str) -> str | None:
        """The execute-mode worker holding the run, from its Redis record (None: launched by
        a run launcher, or not known to Redis)."""
        try:
            record = self.queue.record(run_id)
        except redis.RedisError as exc:  # the launcher's terminate marks it CANCELING too
            log.warning("could not read run %s from Redis: %s", run_id, exc)
            return None
        if record.get("mode") == "execute" and record.get("state") == RunState.STARTED:
            return record.get("worker") or "?"
        return None

    def _reload(self, run_id: str) -> DagsterRun:
        run = self._instance.get_run_by_id(run_id)
        if run is None:
            raise RuntimeError(f"run {run_id} vanished from run storage")
        return run


def _limits(
    max_concurrent_runs: Any,
    tag_concurrency_limits: list[Mapping[str, Any]] | None,
    lanes: Mapping[str, Any] | None,
    where: str,
) -> QueueLimits:
    """The limits, each checked (`where`: the config block they come from).

    Raises:
        ValueError: a limit below -1, or not an integer.
    """
    tag_limits = []
    for i, raw in enumerate(tag_concurrency_limits or []):
        contract.checked_limit(f"{where}tag_concurrency_limits[{i}].limit", raw.get("limit"))
        tag_limits.append(TagLimit.parse(raw))
    merged = {**DEFAULT_LANES, **dict(lanes or {})}
    return QueueLimits(
        max_concurrent_runs=contract.checked_limit(
            f"{where}max_concurrent_runs", max_concurrent_runs
        ),
        lanes={
            lane: contract.checked_limit(f"run_coordinator.config.lanes.{lane}", n)
            for lane, n in merged.items()
        },
        tag_limits=tuple(tag_limits),
    )
