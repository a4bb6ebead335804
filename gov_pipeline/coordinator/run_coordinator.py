"""RedisRunCoordinator: Dagster's RunCoordinator contract, with Redis as the queue.

`submit_run` records the enqueue event first (status QUEUED), then puts the run in line in
Redis; a `gov-pipeline worker` claims and launches it. If Redis cannot be reached at
submit, the run is launched directly (fallback `launch`, the default, with an engine event
saying so) or fails (fallback `fail`). Not a QueuedRunCoordinator subclass on purpose:
that would start Dagster's own dequeuer, which would launch the same runs again.
"""

# No "from __future__ import annotations": Dagster's config machinery reads this class.

import logging
from collections.abc import Mapping
from typing import Any

import redis
from dagster import (
    DagsterEvent,
    DagsterRun,
    DagsterRunStatus,
    Field,
    IntSource,
    Noneable,
    Permissive,
    StringSource,
    SubmitRunContext,
)

from gov_pipeline.config import load_settings
from gov_pipeline.coordinator.queue import (
    DEFAULT_LANES,
    LANE_TAG,
    QueueLimits,
    RunQueue,
    TagLimit,
    lane_of,
    priority_of,
)
from gov_pipeline.coordinator.states import RunState
from gov_pipeline.dagster_internals import (
    ConfigurableClass,
    ConfigurableClassData,
    RunCoordinator,
    RunQueueConfig,
)
from gov_pipeline.domain import lanes as lane_table

log = logging.getLogger(__name__)

FALLBACKS = ("launch", "fail")


class RedisRunCoordinator(RunCoordinator, ConfigurableClass):
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
        lanes: Mapping[str, int] | None = None,
        default_lane: str = "policy",
        tag_concurrency_limits: list[Mapping[str, Any]] | None = None,
        ordering_tag: str = "gov/entity",
        unordered_values: list[str] | None = None,
        lease_seconds: int = 30,
        fallback: str = "launch",
        retention_seconds: int = 86_400,
        lane_rules: Mapping[str, Any] | None = None,
    ) -> None:
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        self._inst_data = inst_data
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.default_lane = default_lane
        self.ordering_tag = ordering_tag
        self.unordered_values = frozenset(unordered_values or ["multiple", ""])
        self.lease_seconds = lease_seconds
        self.fallback = fallback
        self.retention_seconds = retention_seconds
        self.limits = QueueLimits(
            max_concurrent_runs=max_concurrent_runs,
            lanes={**DEFAULT_LANES, **dict(lanes or {})},
            tag_limits=tuple(TagLimit.parse(t) for t in tag_concurrency_limits or []),
        )
        # Retries and timeouts per lane: the table of domain/lanes.py with these overrides.
        self.rules = lane_table.lane_rules(lane_rules)
        self._queue: RunQueue | None = None
        super().__init__()  # type: ignore[no-untyped-call]

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "redis_url": Field(StringSource, is_required=False),
            "key_prefix": Field(StringSource, is_required=False),
            "max_concurrent_runs": Field(IntSource, is_required=False, default_value=10),
            "lanes": Field(Permissive(), is_required=False),  # type: ignore[no-untyped-call]
            "default_lane": Field(str, is_required=False, default_value="policy"),
            "tag_concurrency_limits": Field(Noneable(list), is_required=False),
            "ordering_tag": Field(str, is_required=False, default_value="gov/entity"),
            "unordered_values": Field(Noneable(list), is_required=False),
            "lease_seconds": Field(IntSource, is_required=False, default_value=30),
            "fallback": Field(str, is_required=False, default_value="launch"),
            "retention_seconds": Field(IntSource, is_required=False, default_value=86_400),
            "lane_rules": Field(Permissive(), is_required=False),  # type: ignore[no-untyped-call]
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
            ValueError: `fallback` is neither `launch` nor `fail`.
            InvalidInputError: a `lane_rules` entry is malformed.
        """
        settings = load_settings()
        values = dict(config_value)
        values["redis_url"] = values.get("redis_url") or settings.redis_url
        values["key_prefix"] = values.get("key_prefix") or settings.redis_prefix
        return cls(inst_data=inst_data, **values)

    @property
    def queue(self) -> RunQueue:
        if self._queue is None:
            self._queue = RunQueue.from_url(self.redis_url, self.key_prefix, self.limits)
        return self._queue

    def get_run_queue_config(self) -> RunQueueConfig:
        """The limits in the form the UI shows them (coordinator/instance.py): each lane as a
        limit on `gov/queue` with its value, the tag limits, and the ordering tag as one run
        per value (runs valued "multiple" are exempt, which this form cannot say)."""
        lanes = [
            {"key": LANE_TAG, "value": lane, "limit": limit}
            for lane, limit in sorted(self.limits.lanes.items())
            if limit >= 0
        ]
        tags = [
            {"key": t.key, "limit": t.limit,
             **({"value": {"applyLimitPerUniqueValue": True}} if t.per_unique
                else {"value": t.value} if t.value is not None else {})}
            for t in self.limits.tag_limits
        ]  # fmt: skip
        order = {"key": self.ordering_tag, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        return RunQueueConfig(
            max_concurrent_runs=self.limits.max_concurrent_runs,
            tag_concurrency_limits=[*lanes, *tags, order],
            max_user_code_failure_retries=0,
            user_code_failure_retry_delay=0,
            should_block_op_concurrency_limited_runs=False,
            op_concurrency_slot_buffer=0,
            explicitly_enabled_concurrency_run_blocking=False,
        )

    def rule_of(self, tags: Mapping[str, str]) -> lane_table.LaneRule:
        """The retries and timeout a run with these tags goes by: its own rule tags, else its
        lane's rule as configured here."""
        return lane_table.rule_of_run(tags, self.rules, self.default_lane)

    def order_of(self, tags: Mapping[str, str]) -> str | None:
        value = tags.get(self.ordering_tag)
        return None if value is None or value in self.unordered_values else value

    def limit_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        """The tags the limits look at (stored with the run in Redis)."""
        wanted = {t.key for t in self.limits.tag_limits} | {self.ordering_tag, "gov/queue"}
        return {k: v for k, v in tags.items() if k in wanted}

    def enqueue(self, run: DagsterRun) -> bool:
        """Put a QUEUED run in line in Redis (also used to rebuild the queue)."""
        tags = run.tags
        return self.queue.enqueue(
            run.run_id,
            lane=lane_of(tags, self.default_lane),
            priority=priority_of(tags),
            order=self.order_of(tags),
            tags=self.limit_tags(tags),
        )

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if run.status != DagsterRunStatus.NOT_STARTED:
            log.warning("submit_run for run %s in status %s: nothing to do", run.run_id, run.status)
            return self._reload(run.run_id)
        self._stamp_rule(run)
        # The enqueue event comes first: a worker must never see a run that is not QUEUED.
        self._instance.report_dagster_event(DagsterEvent.job_enqueue(run), run_id=run.run_id)
        try:
            self.enqueue(self._reload(run.run_id))
        except redis.RedisError as exc:
            if self.fallback == "fail":
                raise
            queued = self._reload(run.run_id)
            self._instance.report_engine_event(
                f"Redis unreachable at submit ({type(exc).__name__}: {exc}); "
                "fallback 'launch': launching this run directly, outside the Redis queue",
                queued,
            )
            self._instance.launch_run(run.run_id, context.workspace)
        return self._reload(run.run_id)

    def _stamp_rule(self, run: DagsterRun) -> None:
        """Give the run its lane's rule as tags (those it does not carry already: set by
        whoever launched it, or copied from the run a retry re-executes), so that its ops
        and its worker go by the rule configured where it was submitted."""
        rule = lane_table.lane_rule(lane_of(run.tags, self.default_lane), self.rules)
        missing = {k: v for k, v in rule.tags().items() if k not in run.tags}
        if missing:
            self._instance.add_run_tags(run.run_id, missing)

    def cancel_run(self, run_id: str) -> bool:
        """Cancel a queued run, or terminate a started one: the run launcher terminates a
        launched run; a run executing inside an execute-mode worker is marked CANCELING,
        which that worker watches for, and it stops the run's process (True).
        """
        run = self._instance.get_run_by_id(run_id)
        if run is None:
            return False
        started = run.status == DagsterRunStatus.STARTED
        worker = self._executing_worker(run_id) if started else None
        if worker is not None:
            self._instance.report_run_canceling(
                run, message=f"Terminating: worker {worker}, executing this run, stops it."
            )
            return True
        if run.status == DagsterRunStatus.QUEUED:
            try:
                self.queue.remove_queued(run_id, self.retention_seconds)
            except redis.RedisError as exc:  # the worker re-checks the status before launching
                log.warning("could not remove run %s from Redis: %s", run_id, exc)
            self._instance.report_run_canceling(run, message="Canceling run from the queue.")
            self._instance.report_run_canceled(run)
            return True
        return bool(self._instance.run_launcher.terminate(run_id))

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
