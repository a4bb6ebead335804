"""The sweeper sensor: runs for changes no run will process.

The change sensor requests each change once. A run that fails for good before matching
(its process killed and its retries used up, the database down past the op retries) leaves
its changes unprocessed, and only a later change of the same policy would catch them up.
Every `GOV_PIPELINE_SWEEP_INTERVAL` seconds this sensor looks for committed changes older
than `GOV_PIPELINE_SWEEP_GRACE` seconds without a processed marker and not held by a run
that is still waiting or running, and requests `process_policy_changes` runs for them. The
engine's unique keys make a change swept twice harmless. A change is swept at most
`MAX_SWEEPS` times; after that the tick names it and `gov-pipeline verify` reports it.
"""

# No "from __future__ import annotations": Dagster reads the sensor's annotations at runtime.

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

from gov_pipeline.config import load_settings
from gov_pipeline.domain.batching import BatchingPolicy, compact_ids, plan_runs
from gov_pipeline.orchestration.jobs import change_ids_of_run, process_policy_changes
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.orchestration.sensors import daemon_interval, pending_changes, run_request
from gov_pipeline.runners.sweep import settled_up_to, stranded_changes
from gov_pipeline.services.changes import anchor_at

# Read from the environment once, when the code location loads (no I/O).
_SETTINGS = load_settings()
MAX_SWEEPS = 3  # times one change is requested again before the sweeper gives up on it
SWEEP_LIMIT = 2000  # changes looked at per tick
SWEEP_TAG = "gov/sweep"
WAITING_OR_RUNNING = [
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


@dataclass
class SweepCursor:
    """How many sweeps requested runs, how often each still-stranded change was swept, and
    up to which id every change is settled (processed and past the grace period)."""

    sweeps: int = 0
    tries: dict[int, int] = field(default_factory=dict)
    after: int = 0
    anchor: str | None = None  # the change at `after` (see services/changes.py)

    @classmethod
    def decode(cls, raw: str | None) -> "SweepCursor":
        if not raw:
            return cls()
        data = json.loads(raw)
        tries = {int(k): int(v) for k, v in data["tries"].items()}
        return cls(int(data.get("sweeps", 0)), tries, int(data.get("after", 0)), data.get("a"))

    def encode(self) -> str:
        data = {"sweeps": self.sweeps, "tries": self.tries, "after": self.after, "a": self.anchor}
        return json.dumps(data, sort_keys=True)


def held_change_ids(instance: dg.DagsterInstance) -> set[int]:
    """Change ids given to process_policy_changes runs that are still waiting or running."""
    runs = instance.get_runs(
        RunsFilter(job_name=process_policy_changes.name, statuses=WAITING_OR_RUNNING)
    )
    return {i for run in runs for i in change_ids_of_run(run.run_config)}


@dg.sensor(
    job=process_policy_changes,
    minimum_interval_seconds=daemon_interval(_SETTINGS.sweep_interval_s),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests runs for committed changes that stayed unprocessed past the grace period "
        "and that no waiting or running run holds (their runs failed for good)."
    ),
)
def unprocessed_change_sweeper(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.SensorResult:
    settings = database.settings()
    cursor = SweepCursor.decode(context.cursor)
    older_than = datetime.now(UTC) - timedelta(seconds=settings.sweep_grace_s)
    with database.sessions().begin() as session:
        if cursor.after and cursor.anchor and anchor_at(session, cursor.after) != cursor.anchor:
            context.log.warning(
                f"change {cursor.after}, up to which every change was settled, is gone or is "
                "another change: the application database was restored or recreated; "
                "sweeping from the start"
            )
            cursor = SweepCursor(sweeps=cursor.sweeps)
        settled = settled_up_to(session, after=cursor.after, older_than=older_than)
        if settled != cursor.after or cursor.anchor is None:
            cursor.after = settled
            cursor.anchor = anchor_at(session, settled) if settled else None
        stranded = stranded_changes(
            session, older_than=older_than, limit=SWEEP_LIMIT, after=cursor.after
        )
        held = held_change_ids(context.instance)
        free = [c for c in stranded if c.id not in held]
        given_up = [c.id for c in free if cursor.tries.get(c.id, 0) >= MAX_SWEEPS]
        due = [c for c in free if cursor.tries.get(c.id, 0) < MAX_SWEEPS]
        pending = pending_changes(session, due)
    # Forget changes that are no longer stranded (processed since).
    cursor.tries = {c.id: cursor.tries.get(c.id, 0) for c in stranded if c.id in cursor.tries}
    note = (
        f" Gave up on {len(given_up)} change(s) after {MAX_SWEEPS} sweeps: "
        f"{compact_ids(given_up, 200)} (see gov-pipeline verify)."
        if given_up
        else ""
    )
    if not pending:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"No stranded changes older than {settings.sweep_grace_s}s "
                f"({len(stranded)} unprocessed, {len(stranded) - len(free)} held by runs).{note}"
            ),
            cursor=cursor.encode(),
        )
    cursor.sweeps += 1
    for change in pending:
        cursor.tries[change.id] = cursor.tries.get(change.id, 0) + 1
    policy = BatchingPolicy(settings.batch_threshold, settings.batch_size)
    requests = []
    for planned in plan_runs(pending, policy):
        base = run_request(planned)
        requests.append(
            dg.RunRequest(
                # A new key per sweep: the key of a run that failed would block a retry.
                run_key=f"sweep-{cursor.sweeps}-{planned.run_key}",
                run_config=base.run_config,
                tags={**base.tags, SWEEP_TAG: str(cursor.sweeps)},
            )
        )
    context.log.info(
        f"sweep {cursor.sweeps}: {len(pending)} stranded change(s) "
        f"{compact_ids([c.id for c in pending], 200)} -> {len(requests)} run(s).{note}"
    )
    return dg.SensorResult(run_requests=requests, cursor=cursor.encode())
