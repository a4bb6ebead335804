"""Dagster's own QueuedRunCoordinator scenarios replayed against the Redis run coordinator.

The scenarios are those of Dagster's tests (dagster_tests/daemon_tests/
test_queued_run_coordinator_daemon.py and core_tests/run_coordinator_tests/
test_queued_run_coordinator.py); each test is named after the one it ports, and says so.
Where Dagster's daemon launches what one dequeue pass selects, here the worker's claim is the
dequeue step: `dequeue` syncs the worker with run storage and claims until nothing more may
be claimed, and returns the runs claimed, in claim order (the runs Dagster's daemon would
launch, in that order). Nothing is launched.

Runs are made as Dagster's tests make them: put in run storage directly (`stored`: in any
status, Redis never hears of them) or submitted through the instance (`queued`). Where we
differ from Dagster on purpose, the test says so (DIFFERENCE).
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterInvalidConfigError,
    DagsterRunStatus,
    JobDefinition,
    SubmitRunContext,
    instance_for_test,
    job,
    op,
    reconstructable,
)
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import create_run_for_test
from dagster._core.workspace.context import BaseWorkspaceRequestContext, WorkspaceProcessContext
from dagster._core.workspace.load_target import EmptyWorkspaceTarget

from gov_pipeline.coordinator.run_coordinator import RedisRunCoordinator
from gov_pipeline.coordinator.worker import Worker
from gov_pipeline.embedded.instance import WORKSPACE
from gov_pipeline_tests.conftest import REDIS_URL

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

PRIORITY_TAG = "dagster/priority"
LANE_TAG = "gov/queue"
# Dagster's ACTIVE_RUN_STATUSES: the runs its daemon counts as in progress.
ACTIVE = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING)
# A run elsewhere whose step holds a pool's slot.
OTHER_RUN = "0a0a0a0a-0000-4000-8000-000000000000"


# -- the jobs of the runs: Dagster's `foo`, and its concurrency-limited workspace ----------


@op
def step() -> None:
    """An op in no pool."""


@op(pool="foo")
def foo_step() -> None:
    """An op in the pool `foo`."""


@op(pool="bar")
def bar_step() -> None:
    """An op in the pool `bar`."""


@op(pool="baz")
def baz_step() -> None:
    """An op in the pool `baz`, which no test gives slots."""


@job
def foo() -> None:
    step()


@job
def foo_limited() -> None:
    """Its one root op is in `foo` (Dagster's concurrency_limited_asset_job, foo selected)."""
    foo_step()


@job
def bar_limited() -> None:
    """Its one root op is in `bar` (Dagster's concurrency_limited_asset_job, bar selected)."""
    bar_step()


@job
def baz_limited() -> None:
    baz_step()


@job
def partial_root() -> None:
    """A root op in `foo` and a root op in no pool (partial_concurrency_limited_multi_root_job)."""
    foo_step()
    step()


LOCATION = RegisteredCodeLocationOrigin(location_name="queue_contract")


# -- the instance, runs and the dequeue step -------------------------------------------


def coordinator_overrides(storage_url: str, prefix: str, **config: Any) -> dict[str, Any]:
    """dagster.yaml (as `instance_for_test` overrides) of an instance on PostgreSQL storage
    with the Redis run coordinator configured with `config` (coordinator_support's
    `instance_yaml`, with a lease long enough never to expire during a test)."""
    return {
        "storage": {"postgres": {"postgres_url": storage_url}},
        "instance_class": {
            "module": "gov_pipeline.coordinator.instance", "class": "GovDagsterInstance",
        },
        "run_coordinator": {
            "module": "gov_pipeline.coordinator.run_coordinator",
            "class": "RedisRunCoordinator",
            "config": {
                "redis_url": REDIS_URL, "key_prefix": prefix, "lease_seconds": 300, **config,
            },
        },
    }  # fmt: skip


def dequeue(worker: Worker) -> list[str]:
    """One pass of Dagster's dequeuer: the worker's storage sync, then claims until none is
    possible. The runs claimed, in claim order."""
    worker.sync_storage()
    claimed: list[str] = []
    while (lease := worker.claim_one()) is not None:
        worker._leases[lease.run_id] = lease  # as its claim loop keeps them, for _handle
        claimed.append(lease.run_id)
        assert len(claimed) <= 1000, "claim_one never returns None"
    return claimed


@dataclass
class Queue:
    """An instance with the Redis run coordinator, a worker of it (never started: the tests
    call its claim), and a workspace request context to submit with (no code location:
    submitting only reads the run)."""

    instance: DagsterInstance
    worker: Worker
    request: BaseWorkspaceRequestContext

    def stored(
        self,
        status: DagsterRunStatus,
        tags: Mapping[str, str] | None = None,
        job_def: JobDefinition = foo,
    ) -> str:
        """Dagster's `create_run`: a run put in run storage in `status`, not submitted. A run
        of `foo` has no snapshots (as Dagster's tests make them); a run of another job has
        its execution plan, whose ops' pools are the run's (`run_op_concurrency`)."""
        origins: dict[str, Any] = {
            "remote_job_origin": RemoteJobOrigin(
                repository_origin=RemoteRepositoryOrigin(
                    code_location_origin=LOCATION, repository_name="__repository__"
                ),
                job_name=job_def.name,
            ),
            "job_code_origin": reconstructable(job_def).get_python_origin(),
        }
        if job_def is foo:
            run = create_run_for_test(
                self.instance, job_name=job_def.name, status=status, tags=tags, **origins
            )
        else:
            run = self.instance.create_run_for_job(
                job_def=job_def, status=status, tags=tags, **origins
            )
            assert run.run_op_concurrency is not None
        return str(run.run_id)

    def queued(self, tags: Mapping[str, str] | None = None, job_def: JobDefinition = foo) -> str:
        """Dagster's `create_queued_run`: a NOT_STARTED run submitted (through our
        coordinator: QUEUED in run storage and in line in Redis)."""
        run_id = self.stored(DagsterRunStatus.NOT_STARTED, tags, job_def)
        self.instance.submit_run(run_id, self.request)
        return run_id

    def dequeue(self) -> list[str]:
        return dequeue(self.worker)

    def finish(self, run_id: str) -> None:
        """A claimed run launched and succeeded: SUCCESS in run storage, its slot freed."""
        run = self.instance.get_run_by_id(run_id)
        assert run is not None
        self.instance.report_dagster_event(
            DagsterEvent(
                event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name
            ),
            run_id=run_id,
        )
        lease = self.worker._leases.pop(run_id)
        assert self.worker.queue.release(run_id, "SUCCESS", 60, token=lease.token)

    def status(self, run_id: str) -> DagsterRunStatus:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None
        return run.status


@pytest.fixture
def make_queue(dagster_storage_url: str, redis_prefix: str) -> Iterator[Callable[..., Queue]]:
    """`make(**coordinator_config)`: a `Queue` on wiped PostgreSQL storage and a Redis key
    prefix of its own; every instance made is closed, and its Redis keys deleted, after the
    test."""
    count = itertools.count()
    with ExitStack() as stack:

        def make(**config: Any) -> Queue:
            prefix = f"{redis_prefix}:{next(count)}"
            overrides = coordinator_overrides(dagster_storage_url, prefix, **config)
            instance = stack.enter_context(instance_for_test(overrides=overrides))
            instance.wipe()
            assert isinstance(instance.run_coordinator, RedisRunCoordinator)
            process = stack.enter_context(WorkspaceProcessContext(instance, EmptyWorkspaceTarget()))
            worker = Worker(instance, workspace=WORKSPACE, mode="launch")
            return Queue(instance, worker, process.create_request_context())

        yield make  # (the redis_prefix fixture deletes the keys of every prefix under it)


@contextmanager
def loaded(storage_url: str, prefix: str, **config: Any) -> Iterator[DagsterInstance]:
    """An instance whose run coordinator is configured so, not loaded yet."""
    with instance_for_test(overrides=coordinator_overrides(storage_url, prefix, **config)) as i:
        yield i


# -- run selection and max_concurrent_runs ---------------------------------------------


def test_attempt_to_launch_runs_filter(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_attempt_to_launch_runs_filter. Only QUEUED runs are dequeued; besides
    the submitted run, a run QUEUED by its enqueue event alone (Dagster's create_queued_run,
    which our coordinator never sees) and one created QUEUED are found by the storage sync."""
    q = make_queue()
    submitted = q.queued()
    by_event = q.stored(DagsterRunStatus.NOT_STARTED)
    q.instance.report_dagster_event(
        DagsterEvent(event_type_value=DagsterEventType.PIPELINE_ENQUEUED.value, job_name="foo"),
        run_id=by_event,
    )
    created_queued = q.stored(DagsterRunStatus.QUEUED)
    q.stored(DagsterRunStatus.NOT_STARTED)
    assert set(q.dequeue()) == {submitted, by_event, created_queued}
    assert q.dequeue() == []  # claimed once each


def test_attempt_to_launch_runs_no_queued(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_attempt_to_launch_runs_no_queued."""
    q = make_queue()
    q.stored(DagsterRunStatus.STARTED)
    q.stored(DagsterRunStatus.NOT_STARTED)
    assert q.dequeue() == []


@pytest.mark.parametrize(
    ("num_in_progress_runs", "use_threads"), [(0, True), (1, False), (5, True)]
)
def test_get_queued_runs_max_runs(
    make_queue: Callable[..., Queue], num_in_progress_runs: int, use_threads: bool
) -> None:
    """Dagster: test_get_queued_runs_max_runs. Runs in progress in run storage (STARTING,
    STARTED, CANCELING), which Redis does not hold, count against max_concurrent_runs; runs
    neither queued nor active (SUSPENDED, ended) do not. The runs claimed are the first
    submitted."""
    max_runs = 4
    q = make_queue(max_concurrent_runs=max_runs, dequeue_use_threads=use_threads)
    for i in range(num_in_progress_runs):
        q.stored(ACTIVE[i % len(ACTIVE)])
    for status in (DagsterRunStatus.SUSPENDED, DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE):
        q.stored(status)
    queued = [q.queued() for _ in range(max_runs + 1)]
    assert q.dequeue() == queued[: max(0, max_runs - num_in_progress_runs)]


def test_get_queued_runs_max_runs_zero(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_get_queued_runs_max_runs, with max_concurrent_runs 0 (Dagster's config:
    "Set to 0 to stop any runs from launching")."""
    q = make_queue(max_concurrent_runs=0)
    q.queued()
    q.stored(DagsterRunStatus.QUEUED)
    assert q.dequeue() == []


def test_disable_max_concurrent_runs_limit(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_disable_max_concurrent_runs_limit. -1: no limit, runs in progress or not
    (and an untagged run is in no lane: no lane limit holds it back either)."""
    q = make_queue(max_concurrent_runs=-1)
    for i in range(5):
        q.stored(ACTIVE[i % len(ACTIVE)])
    queued = [q.queued() for _ in range(6)]
    assert q.dequeue() == queued


# -- priority --------------------------------------------------------------------------


def test_priority(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_priority. The default-priority run is created QUEUED (never submitted):
    the storage sync puts it in line, at its priority."""
    q = make_queue()
    default = q.stored(DagsterRunStatus.QUEUED)
    lo = q.queued({PRIORITY_TAG: "-1"})
    hi = q.queued({PRIORITY_TAG: "3"})
    assert q.dequeue() == [hi, default, lo]


def test_priority_exact_integers(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_priority, at the edges of its `_priority_sort`: the priority is
    int(dagster/priority), exact at any size int() accepts (beyond floats' 2**53 and any
    clamp, very negative too; int() also takes " 7 " and "1_000"); higher first, equal
    priorities in submit order ("sorted is stable, so fifo is maintained")."""
    q = make_queue(max_concurrent_runs=-1)
    longest = "9" * (sys.get_int_max_str_digits() or 4300)
    values = [
        "0", str(10**30), str(-(10**30)), str(2**53 + 1), str(2**53), "1000001", "1000000",
        longest, "-" + longest, " 7 ", "1_000", "0", str(10**30),
    ]  # fmt: skip
    ids = [q.queued({PRIORITY_TAG: value}) for value in values]
    order = sorted(range(len(ids)), key=lambda i: (-int(values[i]), i))
    assert q.dequeue() == [ids[i] for i in order]


def test_priority_on_malformed_tag(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_priority_on_malformed_tag. A priority int() refuses counts as 0 (a
    number too long for int() too): among the 0s, submit order."""
    q = make_queue(max_concurrent_runs=-1)
    values = ["foobar", "-1", "1.5", "", "1e3", "1"]
    if sys.get_int_max_str_digits():
        values.insert(5, "9" * (sys.get_int_max_str_digits() + 1))
    ids = [q.queued({PRIORITY_TAG: value}) for value in values]
    untagged = q.queued()
    zero = [i for i, v in zip(ids, values, strict=True) if v not in ("1", "-1")]
    assert q.dequeue() == [ids[-1], *zero, untagged, ids[1]]


# -- tag concurrency limits ------------------------------------------------------------


def test_tag_limits(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_tag_limits."""
    q = make_queue(
        max_concurrent_runs=10,
        tag_concurrency_limits=[{"key": "database", "value": "tiny", "limit": 1}],
        dequeue_use_threads=True,
    )
    tiny_1 = q.queued({"database": "tiny"})
    q.queued({"database": "tiny"})
    large_1 = q.queued({"database": "large"})
    assert q.dequeue() == [tiny_1, large_1]


def test_tag_limits_blocked_runs_are_skipped(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_tag_limits, with priorities: a run its tag limit holds back is skipped
    (Dagster's daemon removes it from the batch); runs of lower priority that the limit does
    not hold back are claimed past it."""
    q = make_queue(tag_concurrency_limits=[{"key": "database", "value": "tiny", "limit": 1}])
    tiny_hi = q.queued({"database": "tiny", PRIORITY_TAG: "10"})
    q.queued({"database": "tiny", PRIORITY_TAG: "5"})
    plain = q.queued()
    large_lo = q.queued({"database": "large", PRIORITY_TAG: "-5"})
    assert q.dequeue() == [tiny_hi, plain, large_lo]


def test_tag_limits_count_runs_in_progress(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_tag_limits, the limit's holders in progress in run storage only (Dagster
    counts the tags of its in-progress runs: TagConcurrencyLimitsCounter(limits,
    in_progress_runs)); per key, per key and value, per unique value."""
    q = make_queue(
        tag_concurrency_limits=[
            {"key": "database", "value": "tiny", "limit": 1},
            {"key": "user", "limit": 2},
            {"key": "team", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
        ]
    )
    q.stored(DagsterRunStatus.STARTED, {"database": "tiny"})
    q.stored(DagsterRunStatus.STARTING, {"user": "ann"})
    q.stored(DagsterRunStatus.CANCELING, {"user": "bob"})
    q.stored(DagsterRunStatus.STARTED, {"team": "red"})
    q.stored(DagsterRunStatus.SUCCESS, {"team": "blue"})  # ended: holds nothing
    q.queued({"database": "tiny"})
    large = q.queued({"database": "large"})
    q.queued({"user": "carl"})
    q.queued({"team": "red"})
    blue = q.queued({"team": "blue"})
    assert q.dequeue() == [large, blue]


def test_tag_limits_just_key(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_tag_limits_just_key."""
    q = make_queue(
        max_concurrent_runs=10,
        tag_concurrency_limits=[
            {"key": "database", "value": {"applyLimitPerUniqueValue": False}, "limit": 2}
        ],
        dequeue_use_threads=False,
    )
    tiny_1 = q.queued({"database": "tiny"})
    tiny_2 = q.queued({"database": "tiny"})
    q.queued({"database": "large"})
    assert q.dequeue() == [tiny_1, tiny_2]


def test_multiple_tag_limits(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_multiple_tag_limits."""
    q = make_queue(
        max_concurrent_runs=10,
        tag_concurrency_limits=[
            {"key": "database", "value": "tiny", "limit": 1},
            {"key": "user", "value": "johann", "limit": 2},
        ],
    )
    run_1 = q.queued({"database": "tiny", "user": "johann"})
    q.queued({"database": "tiny"})
    run_3 = q.queued({"user": "johann"})
    q.queued({"user": "johann"})
    assert q.dequeue() == [run_1, run_3]


def test_overlapping_tag_limits(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_overlapping_tag_limits."""
    q = make_queue(
        max_concurrent_runs=10,
        tag_concurrency_limits=[
            {"key": "foo", "limit": 2},
            {"key": "foo", "value": "bar", "limit": 1},
        ],
    )
    run_1 = q.queued({"foo": "bar"})
    q.queued({"foo": "bar"})
    run_3 = q.queued({"foo": "other"})
    q.queued({"foo": "other"})
    assert q.dequeue() == [run_1, run_3]


def test_limits_per_unique_value(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_limits_per_unique_value (two passes: the runs claimed by the first,
    held in Redis, count in the second)."""
    q = make_queue(
        max_concurrent_runs=10,
        tag_concurrency_limits=[
            {"key": "foo", "limit": 1, "value": {"applyLimitPerUniqueValue": True}}
        ],
    )
    run_1 = q.queued({"foo": "bar"})
    q.queued({"foo": "bar"})
    assert q.dequeue() == [run_1]
    run_3 = q.queued({"foo": "other"})
    q.queued({"foo": "other"})
    assert q.dequeue() == [run_3]


def test_limits_per_unique_value_overlapping_limits_less_than(
    make_queue: Callable[..., Queue],
) -> None:
    """Dagster: test_limits_per_unique_value_overlapping_limits_less_than."""
    q = make_queue(
        max_concurrent_runs=10,
        tag_concurrency_limits=[
            {"key": "foo", "limit": 1, "value": {"applyLimitPerUniqueValue": True}},
            {"key": "foo", "limit": 2},
        ],
    )
    run_1 = q.queued({"foo": "bar"})
    q.queued({"foo": "bar"})
    run_3 = q.queued({"foo": "other"})
    q.queued({"foo": "other-2"})
    assert q.dequeue() == [run_1, run_3]


def test_limits_per_unique_value_overlapping_limits_greater_than(
    make_queue: Callable[..., Queue],
) -> None:
    """Dagster: test_limits_per_unique_value_overlapping_limits_greater_than."""
    q = make_queue(
        max_concurrent_runs=10,
        tag_concurrency_limits=[
            {"key": "foo", "limit": 2, "value": {"applyLimitPerUniqueValue": True}},
            {"key": "foo", "limit": 1, "value": "bar"},
        ],
    )
    run_1 = q.queued({"foo": "bar"})
    run_2 = q.queued({"foo": "baz"})
    q.queued({"foo": "bar"})
    run_4 = q.queued({"foo": "baz"})
    q.queued({"foo": "baz"})
    assert q.dequeue() == [run_1, run_2, run_4]


def test_key_limit_with_extra_tags(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_key_limit_with_extra_tags."""
    q = make_queue(max_concurrent_runs=2, tag_concurrency_limits=[{"key": "test", "limit": 1}])
    run_1 = q.queued({"other-tag": "value", "test": "value"})
    q.queued({"other-tag": "value", "test": "value"})
    assert q.dequeue() == [run_1]


def test_key_limit_with_priority(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_key_limit_with_priority."""
    q = make_queue(max_concurrent_runs=2, tag_concurrency_limits=[{"key": "test", "limit": 1}])
    q.queued({"test": "value", PRIORITY_TAG: "-100"})
    hi = q.queued({"test": "value", PRIORITY_TAG: "100"})
    assert q.dequeue() == [hi]


def test_tag_limits_minus_one_and_zero(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_tag_limits with limits of -1 and 0. 0 blocks the runs carrying the tag
    (as in Dagster's test_multiple_blocks). DIFFERENCE: -1 is no limit, as everywhere in our
    configuration; Dagster would block every run carrying the tag (0 >= -1)."""
    q = make_queue(
        tag_concurrency_limits=[
            {"key": "database", "value": "tiny", "limit": -1},
            {"key": "user", "limit": -1},
            {"key": "team", "value": {"applyLimitPerUniqueValue": True}, "limit": -1},
            {"key": "database", "value": "huge", "limit": 0},
        ]
    )
    q.stored(DagsterRunStatus.STARTED, {"database": "tiny", "user": "ann", "team": "red"})
    free = [
        q.queued({"database": "tiny"}), q.queued({"database": "tiny"}), q.queued({"user": "bob"}),
        q.queued({"team": "red"}), q.queued({"team": "red"}),
    ]  # fmt: skip
    q.queued({"database": "huge"})
    assert q.dequeue() == free


# -- lanes and the ordering tag (ours) -------------------------------------------------


def test_lanes(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_tag_limits, for our lanes: a lane is a limit on the runs tagged
    `gov/queue` with its name (Dagster's key and value limit); a run without the tag is in no
    lane (only max_concurrent_runs and the tag limits hold it back). Runs in progress in run
    storage count against their lane; -1 is no limit, 0 blocks."""
    lanes = {"policy": 1, "audit": -1, "export": 0, "assessment": 2}
    q = make_queue(max_concurrent_runs=10, lanes=lanes)
    q.stored(DagsterRunStatus.STARTED, {LANE_TAG: "assessment"})
    untagged = [q.queued() for _ in range(2)]
    policy = [q.queued({LANE_TAG: "policy"}) for _ in range(2)]
    audit = [q.queued({LANE_TAG: "audit"}) for _ in range(2)]
    q.queued({LANE_TAG: "export"})
    assessment = [q.queued({LANE_TAG: "assessment"}) for _ in range(2)]
    assert q.dequeue() == [*untagged, policy[0], *audit, assessment[0]]


def test_limits_per_unique_value_ordering_tag(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_limits_per_unique_value, for our ordering tag `gov/entity`: one run at a
    time per value, and in submit order (a later run of higher priority waits behind the
    first of its value); the next runs when the first ends."""
    q = make_queue(max_concurrent_runs=-1)
    first = q.queued({"gov/entity": "1"})
    second = q.queued({"gov/entity": "1", PRIORITY_TAG: "10"})
    other = q.queued({"gov/entity": "2"})
    plain = q.queued()
    assert q.dequeue() == [first, other, plain]
    q.finish(first)
    assert q.dequeue() == [second]


# -- submit and cancel (test_queued_run_coordinator.py) --------------------------------


def test_submit_run(make_queue: Callable[..., Queue]) -> None:
    """Dagster: TestQueuedRunCoordinator.test_submit_run. Submitting queues the run (QUEUED,
    its enqueue event) and launches nothing; the worker's claim takes it."""
    q = make_queue()
    run_id = q.stored(DagsterRunStatus.NOT_STARTED)
    run = q.instance.get_run_by_id(run_id)
    assert run is not None
    returned = q.instance.run_coordinator.submit_run(SubmitRunContext(run, q.request))
    assert returned.run_id == run_id and returned.status == DagsterRunStatus.QUEUED
    assert q.status(run_id) == DagsterRunStatus.QUEUED
    enqueued = q.instance.get_records_for_run(
        run_id, of_type=DagsterEventType.PIPELINE_ENQUEUED
    ).records
    assert len(enqueued) == 1
    assert q.dequeue() == [run_id]
    assert q.status(run_id) == DagsterRunStatus.QUEUED  # claimed, not launched


def test_submit_run_checks_status(make_queue: Callable[..., Queue]) -> None:
    """Dagster: TestQueuedRunCoordinator.test_submit_run_checks_status. Submitting a run that
    is not NOT_STARTED is a no-op (no enqueue event) that returns the run; a QUEUED one is
    still found by the storage sync, and claimed once; a STARTED one is left alone."""
    q = make_queue()
    for status in (DagsterRunStatus.QUEUED, DagsterRunStatus.STARTED):
        run_id = q.stored(status)
        run = q.instance.get_run_by_id(run_id)
        assert run is not None
        returned = q.instance.run_coordinator.submit_run(SubmitRunContext(run, q.request))
        assert returned.run_id == run_id and returned.status == status
        enqueued = q.instance.get_records_for_run(
            run_id, of_type=DagsterEventType.PIPELINE_ENQUEUED
        ).records
        assert enqueued == []
        assert q.status(run_id) == status
        assert q.dequeue() == ([run_id] if status == DagsterRunStatus.QUEUED else [])
    assert q.dequeue() == []


def test_cancel_run(make_queue: Callable[..., Queue]) -> None:
    """Dagster: TestQueuedRunCoordinator.test_cancel_run. A queued run canceled is CANCELED
    and never claimed: submitted (in Redis), or QUEUED in run storage only."""
    q = make_queue()
    submitted = q.queued()
    storage_only = q.stored(DagsterRunStatus.QUEUED)
    kept = q.queued()
    for run_id in (submitted, storage_only):
        assert q.instance.run_coordinator.cancel_run(run_id)
        assert q.status(run_id) == DagsterRunStatus.CANCELED
    assert q.dequeue() == [kept]
    assert q.dequeue() == []


# -- configuration (test_queued_run_coordinator.py) ------------------------------------


def test_config(
    dagster_storage_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster: TestQueuedRunCoordinator.test_config. Dagster's keys load (values from the
    environment too); a tag limit without `limit` is refused as Dagster refuses it, when the
    instance loads its run coordinator."""
    monkeypatch.setenv("MAX_RUNS", "10")
    monkeypatch.setenv("DEQUEUE_INTERVAL", "7")
    config = {
        "max_concurrent_runs": {"env": "MAX_RUNS"},
        "tag_concurrency_limits": [
            {"key": "foo", "value": "bar", "limit": 3},
            {"key": "backfill", "limit": 2},
        ],
        "dequeue_interval_seconds": {"env": "DEQUEUE_INTERVAL"},
        "block_op_concurrency_limited_runs": {"enabled": True, "op_concurrency_slot_buffer": 1},
    }
    with loaded(dagster_storage_url, redis_prefix, **config) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, RedisRunCoordinator)
        assert coordinator.get_run_queue_config().max_concurrent_runs == 10
    bad = {"tag_concurrency_limits": [{"key": "backfill"}]}
    with (
        loaded(dagster_storage_url, redis_prefix, **bad) as instance,
        pytest.raises(DagsterInvalidConfigError),
    ):
        _ = instance.run_coordinator


def test_config_unique_value(dagster_storage_url: str, redis_prefix: str) -> None:
    """Dagster: TestQueuedRunCoordinator.test_config_unique_value."""
    config = {
        "max_concurrent_runs": 10,
        "tag_concurrency_limits": [
            {"key": "foo", "value": {"applyLimitPerUniqueValue": True}, "limit": 3},
            {"key": "backfill", "limit": 2},
        ],
        "dequeue_interval_seconds": 7,
    }
    with loaded(dagster_storage_url, redis_prefix, **config) as instance:
        assert isinstance(instance.run_coordinator, RedisRunCoordinator)


def test_thread_config(
    dagster_storage_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Dagster: test_thread_config, with Dagster's other dequeuer keys: accepted. The ones a
    worker has no use for (it claims with its own threads) are ignored with a warning naming
    each; the others are honoured."""
    config = {
        "dequeue_interval_seconds": 3,
        "dequeue_use_threads": True,
        "dequeue_num_workers": 16,
        "max_user_code_failure_retries": 2,
        "user_code_failure_retry_delay": 120,
        "block_op_concurrency_limited_runs": {"enabled": False},
    }
    with loaded(dagster_storage_url, redis_prefix, **config) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, RedisRunCoordinator)
        settings = coordinator.settings
    ignored = [r.getMessage() for r in caplog.records if "is ignored" in r.getMessage()]
    for key in ("dequeue_interval_seconds", "dequeue_use_threads", "dequeue_num_workers"):
        assert any(f"run_coordinator.config.{key} is ignored" in m for m in ignored), key
    assert len(ignored) == 3
    assert (settings.max_user_code_failure_retries, settings.user_code_failure_retry_delay) == (
        2, 120,
    )  # fmt: skip
    assert not settings.block_op_concurrency_limited_runs


def test_config_refuses_a_list_value(dagster_storage_url: str, redis_prefix: str) -> None:
    """Dagster: TestQueuedRunCoordinator.test_config, Dagster's schema of a tag limit's
    `value`: a string, or {applyLimitPerUniqueValue: bool}. A list is refused."""
    bad = {"tag_concurrency_limits": [{"key": "database", "value": ["tiny"], "limit": 1}]}
    with (
        loaded(dagster_storage_url, redis_prefix, **bad) as instance,
        pytest.raises(DagsterInvalidConfigError),
    ):
        _ = instance.run_coordinator


def test_config_refuses_max_concurrent_runs_below_minus_one(
    dagster_storage_url: str, redis_prefix: str
) -> None:
    """Dagster: QueuedRunCoordinator's own check ("Negative values other than -1 (which
    disables the limit) for max_concurrent_runs are disallowed"): -2 is refused, naming the
    key."""
    with (
        loaded(dagster_storage_url, redis_prefix, max_concurrent_runs=-2) as instance,
        pytest.raises(Exception, match="max_concurrent_runs"),
    ):
        _ = instance.run_coordinator


# -- pools: block_op_concurrency_limited_runs ------------------------------------------


def test_op_concurrency_aware_dequeuing(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_op_concurrency_aware_dequeuing. A run whose root op's pool has a free
    slot is claimed; with the pool's slots all taken (by a step of another run) it is not;
    once slots are added, it is."""
    q = make_queue(block_op_concurrency_limited_runs={"enabled": True})
    storage = q.instance.event_log_storage
    storage.set_concurrency_slots("foo", 1)
    run_1 = q.queued(job_def=foo_limited)
    assert q.dequeue() == [run_1]
    q.finish(run_1)
    assert storage.claim_concurrency_slot("foo", OTHER_RUN, "foo_step").is_claimed
    run_2 = q.queued(job_def=foo_limited)
    assert q.dequeue() == []
    run_3 = q.queued(job_def=foo_limited)
    assert q.dequeue() == []
    # One more slot: one more run (the run claimed counts until it has started).
    storage.set_concurrency_slots("foo", 2)
    assert q.dequeue() == [run_2]
    q.finish(run_2)  # it never took its slot: its end leaves the slot to the next
    assert q.dequeue() == [run_3]


def test_op_concurrency_root_progress(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_op_concurrency_root_progress. foo has no slot, bar has one: the foo run
    waits, the bar run (submitted after it) is claimed; a pool never given slots does not
    block (Dagster: no limit set for the key)."""
    q = make_queue(block_op_concurrency_limited_runs={"enabled": True})
    q.instance.event_log_storage.set_concurrency_slots("foo", 0)
    q.instance.event_log_storage.set_concurrency_slots("bar", 1)
    q.queued(job_def=foo_limited)
    assert q.dequeue() == []
    run_2 = q.queued(job_def=bar_limited)
    run_3 = q.queued(job_def=baz_limited)
    assert q.dequeue() == [run_2, run_3]


def test_op_concurrency_partial_root(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_op_concurrency_partial_root. A run with a root op in no pool is not
    blocked, its other root op's pool having no slot."""
    q = make_queue(block_op_concurrency_limited_runs={"enabled": True})
    q.instance.event_log_storage.set_concurrency_slots("foo", 0)
    run_1 = q.queued(job_def=partial_root)
    assert q.dequeue() == [run_1]


def test_multiple_blocks(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_multiple_blocks. Held back by a tag limit of 0 and by its pool both."""
    q = make_queue(
        tag_concurrency_limits=[{"key": "database", "value": "tiny", "limit": 0}],
        block_op_concurrency_limited_runs={"enabled": True},
    )
    q.instance.event_log_storage.set_concurrency_slots("foo", 0)
    q.queued({"database": "tiny"}, job_def=foo_limited)
    assert q.dequeue() == []


def test_op_concurrency_aware_dequeuing_disabled(make_queue: Callable[..., Queue]) -> None:
    """Dagster: test_op_concurrency_aware_dequeuing, with block_op_concurrency_limited_runs
    disabled: pools do not hold runs back (their ops wait for slots when they run)."""
    q = make_queue(block_op_concurrency_limited_runs={"enabled": False})
    q.instance.event_log_storage.set_concurrency_slots("foo", 0)
    run_1 = q.queued(job_def=foo_limited)
    assert q.dequeue() == [run_1]


# -- the launch of a claimed run --------------------------------------------------------


def test_retry_user_code_error_run(dagster_storage_url: str, redis_prefix: str) -> None:
    """Dagster: test_retry_user_code_error_run (and test_skip_error_runs). A launch that
    cannot reach the code server puts the run back in line with a new enqueue event, not
    claimed again before `user_code_failure_retry_delay`; after
    `max_user_code_failure_retries` it fails. Any other launch error fails the run at once.
    DIFFERENCE: only that run waits out the delay, not its whole code location."""
    overrides = {
        **coordinator_overrides(
            dagster_storage_url, f"{redis_prefix}:launch",
            max_user_code_failure_retries=2, user_code_failure_retry_delay=1,
        ),
        "run_launcher": {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"},
    }  # fmt: skip
    with (
        instance_for_test(overrides=overrides) as instance,
        WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as process,
    ):
        instance.wipe()
        worker = Worker(instance, workspace=WORKSPACE, mode="launch")
        worker._workspace_context = process  # the mocked launcher needs no code location
        q = Queue(instance, worker, process.create_request_context())
        unreachable, broken = q.queued(), q.queued()
        launcher: Any = instance.run_launcher
        launcher.bad_user_code_run_ids.add(unreachable)
        launcher.bad_run_ids.add(broken)
        assert q.dequeue() == [unreachable, broken]
        for run_id in (unreachable, broken):
            worker._handle(run_id)
        assert (q.status(unreachable), q.status(broken)) == (
            DagsterRunStatus.QUEUED, DagsterRunStatus.FAILURE,
        )  # fmt: skip
        assert q.dequeue() == []  # not before the delay
        for left in ("1 retry remaining", None):
            time.sleep(1.1)
            assert q.dequeue() == [unreachable]
            worker._handle(unreachable)
            messages = [e.message for e in instance.all_logs(unreachable) if e.message]
            if left:
                assert q.status(unreachable) == DagsterRunStatus.QUEUED
                assert any(left in m for m in messages)
        assert q.status(unreachable) == DagsterRunStatus.FAILURE
        assert any("after 2 attempts; failing the run" in m for m in messages)
        enqueued = instance.get_records_for_run(
            run_id=unreachable, of_type=DagsterEventType.PIPELINE_ENQUEUED
        ).records
        assert len(enqueued) == 3 and not launcher.did_run_launch(unreachable)
        assert worker.queue.active() == set()


def test_only_an_instance_without_dagsters_dequeuer_takes_the_coordinator(
    dagster_storage_url: str, redis_prefix: str
) -> None:
    """The coordinator is a QueuedRunCoordinator to the UI, so Dagster's daemon would start
    its own dequeuer for it: the instance class leaves that daemon out, and any other
    instance class is refused when it loads the coordinator."""
    from dagster import QueuedRunCoordinator

    overrides = coordinator_overrides(dagster_storage_url, f"{redis_prefix}:plain")
    with instance_for_test(overrides=overrides) as instance:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert "QUEUED_RUN_COORDINATOR" not in instance.get_required_daemon_types()
    del overrides["instance_class"]
    with (
        instance_for_test(overrides=overrides) as instance,
        pytest.raises(RuntimeError, match="GovDagsterInstance"),
    ):
        _ = instance.run_coordinator
