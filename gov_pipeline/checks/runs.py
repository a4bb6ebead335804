"""The `dagster_runs` invariant: every Dagster run has ended, or is QUEUED and in line in
Redis, or is started with a live lease in Redis. Added to the database invariants of
`gov_pipeline.checks.verify` when a Dagster instance is at hand."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import DagsterRunStatus, RunsFilter
from sqlalchemy.orm import Session

from gov_pipeline.checks.verify import EXAMPLES_CAP, InvariantResult, VerifyReport, verify
from gov_pipeline.coordinator.run_coordinator import RedisRunCoordinator
from gov_pipeline.coordinator.states import ENDED, RunState

# Dagster statuses of a run a worker holds (under a lease).
HELD_RUN_STATUSES = frozenset(
    {DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING}
)
# Redis record states of a run that is in line or held by a worker.
IN_REDIS_STATES = frozenset({RunState.QUEUED, RunState.CLAIMED, RunState.STARTED})


def check_dagster_runs(
    instance: Any, tenant: str | None, before: datetime, cap: int = EXAMPLES_CAP
) -> tuple[InvariantResult, dict[str, int]]:
    """Runs not ended (and last updated before `before`) must be in line or leased in Redis.

    Returns:
        The invariant's result, and the number of runs per status.
    """
    result = InvariantResult(
        "dagster_runs",
        "every Dagster run ended, or QUEUED and in line in Redis, or started with a live lease",
    )
    filters = RunsFilter(tags={"gov/tenant_id": tenant}) if tenant else None
    by_status: Counter[str] = Counter()
    coordinator = instance.run_coordinator
    queue = coordinator.queue if isinstance(coordinator, RedisRunCoordinator) else None
    if queue is None:
        result.note = "the instance's run coordinator is not the Redis one: leases not checked"
    for record in instance.get_run_records(filters=filters):
        run = record.dagster_run
        status = run.status.value
        by_status[status] += 1
        result.checked += 1
        if run.status in ENDED:
            continue
        updated = record.update_timestamp
        if updated.tzinfo is None:
            updated = updated.replace(tzinfo=UTC)
        if updated >= before:
            continue  # moving right now: give it the grace window
        problem = None
        if queue is None:
            problem = f"{status} since {updated.isoformat()}"
        elif run.status == DagsterRunStatus.QUEUED:
            state = queue.record(run.run_id).get("state")
            if state not in IN_REDIS_STATES:
                problem = f"QUEUED but not in line in Redis (record state {state or 'missing'})"
        elif run.status in HELD_RUN_STATUSES:
            if queue.lease_holder(run.run_id) is None:
                problem = f"{status} with no live lease in Redis"
        else:  # NOT_STARTED: created and never submitted
            problem = f"{status} since {updated.isoformat()}"
        if problem:
            result.add({"run_id": run.run_id, "job": run.job_name, "status": status,
                        "problem": problem}, cap)  # fmt: skip
    return result, dict(by_status)


def verify_with_runs(
    session: Session, instance: Any, *, grace_s: float, **kwargs: Any
) -> VerifyReport:
    """`verify(...)` plus the `dagster_runs` invariant and the runs' figures.

    Args:
        session: a session the caller owns (read only).
        instance: the Dagster instance whose runs are checked against the Redis queue.
        grace_s: changes and runs younger than this are not expected to be done yet.
        **kwargs: passed on to `gov_pipeline.checks.verify.verify`.
    """
    report = verify(session, grace_s=grace_s, **kwargs)
    only = kwargs.get("only")
    if only is None or "dagster_runs" in set(only):
        before = report.checked_at - timedelta(seconds=grace_s)
        runs, by_status = check_dagster_runs(
            instance, kwargs.get("tenant"), before, kwargs.get("cap", EXAMPLES_CAP)
        )
        report.invariants.append(runs)
        report.figures["runs"] = sum(by_status.values())
        report.figures["runs_by_status"] = by_status
    return report
