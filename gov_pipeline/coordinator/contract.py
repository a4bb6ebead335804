"""What the Redis coordinator keeps of Dagster's queued-run contract, in Dagster's own terms.

- the config keys it shares with Dagster's QueuedRunCoordinator, with Dagster's schema, and
  what becomes of the daemon-only ones (`QueueSettings`);
- what counts as in progress: every run in Dagster's run storage in an active status
  (STARTING, STARTED, CANCELING), whoever launched it (`in_progress_outside`);
- pools: a waiting run whose root ops' pools have no free slot is held back, by Dagster's own
  counter (`pool_blocked`);
- the launch of a claimed run, as Dagster's dequeuer does it, with its retries when the code
  server cannot be reached (`launch`);
- the Redis-down fallback, which launches a run only within the limits (`fallback_blocker`).
The claim itself (global, lane and tag limits, priority, per-entity order) is the CLAIM
script (scripts.py), with the same counting as Dagster's `TagConcurrencyLimitsCounter`.
"""

# No "from __future__ import annotations": Dagster's config machinery reads these fields.

import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from dagster import (
    Array,
    Bool,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Field,
    IntSource,
    Noneable,
    RunsFilter,
    ScalarUnion,
    Shape,
    String,
)

from gov_pipeline.coordinator.states import Outcome
from gov_pipeline.dagster_internals import (
    ACTIVE_RUN_STATUSES,
    ConcurrencyConfig,
    DagsterCodeLocationLoadError,
    DagsterUserCodeUnreachableError,
    EngineEventData,
    GlobalOpConcurrencyLimitsCounter,
    LaunchRunContext,
    TagConcurrencyLimitsCounter,
    serializable_error_info_from_exc_info,
)

log = logging.getLogger(__name__)

# Dagster's daemon-only keys that have no meaning here, and why.
IGNORED_KEYS = {
    "dequeue_interval_seconds": "workers claim as soon as a slot frees (their --poll)",
    "dequeue_use_threads": "each worker's --concurrency replaces the dequeue threads",
    "dequeue_num_workers": "each worker's --concurrency replaces the dequeue threads",
}


def tag_limits_schema() -> Field:
    """Dagster's `tag_concurrency_limits` schema, exactly."""
    value = ScalarUnion(
        scalar_type=String,
        non_scalar_schema=Shape({"applyLimitPerUniqueValue": Bool}),  # type: ignore[no-untyped-call]
    )
    entry = Shape(  # type: ignore[no-untyped-call]
        {"key": String, "value": Field(value, is_required=False), "limit": Field(int)}
    )
    return Field(Noneable(Array(entry)), is_required=False)


def dagster_fields() -> dict[str, Field]:
    """The keys of Dagster's QueuedRunCoordinator config, with its types and defaults."""
    return {
        "max_concurrent_runs": Field(IntSource, is_required=False, default_value=10),
        "tag_concurrency_limits": tag_limits_schema(),
        "dequeue_interval_seconds": Field(IntSource, is_required=False),
        "dequeue_use_threads": Field(bool, is_required=False),
        "dequeue_num_workers": Field(IntSource, is_required=False),
        "max_user_code_failure_retries": Field(IntSource, is_required=False, default_value=0),
        "user_code_failure_retry_delay": Field(IntSource, is_required=False, default_value=60),
        "block_op_concurrency_limited_runs": Field(
            {
                "enabled": Field(Bool, is_required=False),
                "op_concurrency_slot_buffer": Field(int, is_required=False),
            },
            is_required=False,
        ),
    }


def checked_limit(name: str, value: Any) -> int:
    """A limit as an int: -1 (no limit), 0 (nothing) or more.

    Raises:
        ValueError: not an integer, or below -1 (named by `name`).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError(
            f"{name}: {value!r} is not a limit "
            "(an integer: -1 for no limit, 0 to launch nothing, or more)"
        )
    return value


@dataclass(frozen=True)
class QueueSettings:
    """The daemon's settings the workers honour."""

    max_user_code_failure_retries: int = 0
    user_code_failure_retry_delay: int = 60
    block_op_concurrency_limited_runs: bool = True
    op_concurrency_slot_buffer: int = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "QueueSettings":
        """From the coordinator's config; logs a warning for each ignored key it sets.

        Raises:
            ValueError: `op_concurrency_slot_buffer` with blocking disabled (as Dagster).
        """
        for key, why in IGNORED_KEYS.items():
            if config.get(key) is not None:
                log.warning("run_coordinator.config.%s is ignored by RedisRunCoordinator: %s",
                            key, why)  # fmt: skip
        block = config.get("block_op_concurrency_limited_runs") or {}
        enabled = bool(block.get("enabled", True))
        buffer = int(block.get("op_concurrency_slot_buffer", 0) or 0)
        if buffer and not enabled:
            raise ValueError(
                "run_coordinator.config.block_op_concurrency_limited_runs: "
                "op_concurrency_slot_buffer can only be set if blocking is enabled"
            )
        return cls(
            max_user_code_failure_retries=int(config.get("max_user_code_failure_retries") or 0),
            user_code_failure_retry_delay=int(config.get("user_code_failure_retry_delay", 60)),
            block_op_concurrency_limited_runs=enabled,
            op_concurrency_slot_buffer=buffer,
        )


def in_progress_runs(instance: DagsterInstance) -> Sequence[DagsterRun]:
    """Every run in progress in run storage, as Dagster's dequeuer counts them."""
    return instance.get_runs(RunsFilter(statuses=list(ACTIVE_RUN_STATUSES)))


def pool_blocked(
    instance: DagsterInstance,
    pooled: set[str],
    held: set[str],
    settings: QueueSettings,
) -> list[str]:
    """The waiting runs among `pooled` (runs using pools, waiting or `held` in a slot) whose
    root ops' pools have no free slot: Dagster's `GlobalOpConcurrencyLimitsCounter`, with
    the held runs not yet started counted as launched."""
    if not pooled or not settings.block_op_concurrency_limited_runs:
        return []
    runs = {run.run_id: run for run in instance.get_runs(RunsFilter(run_ids=sorted(pooled)))}
    in_progress = instance.get_run_records(RunsFilter(statuses=list(ACTIVE_RUN_STATUSES)))
    storage = instance.event_log_storage
    pools = ConcurrencyConfig.from_concurrency_settings(instance.get_settings("concurrency"), None)
    counter = GlobalOpConcurrencyLimitsCounter(
        instance,
        list(runs.values()),
        in_progress,
        concurrency_keys=storage.get_concurrency_keys(),
        pool_limits=storage.get_pool_limits(),
        slot_count_offset=settings.op_concurrency_slot_buffer,
        pool_granularity=pools.pool_config.pool_granularity,
    )
    started = {record.dagster_run.run_id for record in in_progress}
    for run_id in (held & set(runs)) - started:
        counter.update_counters_with_launched_item(runs[run_id])
    return [
        run_id for run_id, run in runs.items() if run_id not in held and counter.is_blocked(run)
    ]


class _Tagged(NamedTuple):
    """What Dagster's tag counter reads of a run: its tags."""

    tags: Mapping[str, str]


def fallback_blocker(
    run: DagsterRun,
    in_progress: Sequence[DagsterRun],
    max_concurrent_runs: int,
    tag_limits: Sequence[Mapping[str, Any]],
    tags_of: Any,
) -> str | None:
    """Why the run may not be launched now, counting `in_progress` (run storage's) against
    `max_concurrent_runs` and `tag_limits` (Dagster's form, lanes and ordering included,
    over the tags `tags_of(run)` gives); None when it may."""
    if 0 <= max_concurrent_runs <= len(in_progress):
        return f"{len(in_progress)} runs in progress, max_concurrent_runs is {max_concurrent_runs}"
    # Dagster's counter reads only the items' tags.
    counted: list[Any] = [_Tagged(tags_of(other)) for other in in_progress]
    counter = TagConcurrencyLimitsCounter(list(tag_limits), counted)
    candidate: Any = _Tagged(tags_of(run))
    if counter.is_blocked(candidate):
        return "a tag limit (lane, ordering or tag_concurrency_limits) is full"
    return None


def launch(
    instance: DagsterInstance, run: DagsterRun, workspace: Any, settings: QueueSettings
) -> str | None:
    """Launch a claimed run as Dagster's dequeuer does: the STARTING event, then the run
    launcher. None when launched; `Outcome.REQUEUED` when the code server could not be reached and
    `max_user_code_failure_retries` allows another try (a new enqueue event, as Dagster's);
    otherwise the run's status after the failed launch (failed with the error as Dagster
    does, or left as it had moved on)."""
    starting = DagsterEvent(
        event_type_value=DagsterEventType.PIPELINE_STARTING.value, job_name=run.job_name
    )
    instance.report_dagster_event(starting, run_id=run.run_id)
    run = _reload(instance, run.run_id)
    try:
        instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=workspace))
        return None
    except Exception as exc:
        return _launch_failed(instance, run.run_id, exc, settings)


_UNREACHABLE = (DagsterUserCodeUnreachableError, DagsterCodeLocationLoadError)


def _launch_failed(
    instance: DagsterInstance, run_id: str, exc: Exception, settings: QueueSettings
) -> str:
    """Dagster's dequeuer after a failed launch (see `launch`), in the `except` block."""
    error = serializable_error_info_from_exc_info(sys.exc_info())
    run = _reload(instance, run_id)
    if run.status not in (DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING):
        return str(run.status.value)  # it moved on by itself
    retries = settings.max_user_code_failure_retries
    if isinstance(exc, _UNREACHABLE) and retries:
        enqueued = instance.get_records_for_run(
            run_id=run_id, of_type=DagsterEventType.PIPELINE_ENQUEUED
        ).records
        left = retries - (len(enqueued) - 1)
        if left > 0:
            instance.report_engine_event(
                "Run dequeue failed to reach the user code server, re-submitting the run "
                f"into the queue ({left} {'retry' if left == 1 else 'retries'} remaining, "
                f"not before {settings.user_code_failure_retry_delay} s)",
                run, EngineEventData.engine_error(error),
            )  # fmt: skip
            instance.report_dagster_event(DagsterEvent.job_enqueue(run), run_id=run_id)
            return Outcome.REQUEUED
        message = f"Run dequeue failed to reach the user code server after {retries} attempts"
    else:
        message = "Caught an unrecoverable error while launching the run"
    instance.report_engine_event(
        f"{message}; failing the run", run, EngineEventData.engine_error(error)
    )
    instance.report_run_failed(run)
    return str(DagsterRunStatus.FAILURE.value)


def retry_at(settings: QueueSettings) -> float:
    """When a run requeued by `launch` may be claimed again (seconds since the epoch)."""
    return time.time() + settings.user_code_failure_retry_delay


def _reload(instance: DagsterInstance, run_id: str) -> DagsterRun:
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise RuntimeError(f"run {run_id} vanished from run storage")
    return run
