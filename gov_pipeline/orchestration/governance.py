"""The governed state in the Catalog: the policy register, the approval backlog, workflow
outcomes, the change backlog and the run queue, as assets of the group `governance`, with
checks that go red when an operator must act. Numeric figures are plain metadata (the UI
plots their trend), lists are table metadata; tenants are rows of the tables, and the
headline figure of each asset also per tenant (`failed [acme]`, at most `TENANT_FIGURES`).

They are materialized by the `refresh_governance` job: every 5 minutes (schedule), and after
runs that change the state (`governance_refresh_sensor`, at most once a refresh interval).
"""

# No "from __future__ import annotations": Dagster reads op annotations at runtime.

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from gov_pipeline.config import Settings
from gov_pipeline.coordinator.run_coordinator import RedisRunCoordinator
from gov_pipeline.domain.statuses import ExecutionStatus, PolicyStatus
from gov_pipeline.orchestration.common import LANE_TAG, daemon_interval, lane_retries
from gov_pipeline.orchestration.heartbeat import beating_in_process_executor
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners.governance import (
    LAG_OK,
    NO_FAILED,
    NO_FAILED_EMAILS,
    NO_OVERDUE,
    GovernanceState,
    Verdict,
    emails_verdict,
    failed_verdict,
    lag_verdict,
    overdue_verdict,
    read_governance_state,
)

GROUP = "governance"
REGISTER = dg.AssetKey("policy_register")
BACKLOG = dg.AssetKey("approval_backlog")
OUTCOMES = dg.AssetKey("workflow_outcomes")
CHANGES = dg.AssetKey("change_backlog")
QUEUE = dg.AssetKey("run_queue")
TENANT_FIGURES = 20  # tenants with a plotted figure of their own (all are in the tables)
TABLE_ROWS = 200
# The columns of the failed emails' table (attributes of an `EmailDelivery`).
EMAIL_COLUMNS = ["id", "tenant_id", "user_id", "to_address", "execution_id", "attempts",
                 "last_error"]  # fmt: skip

SPECS = [
    dg.AssetSpec(REGISTER, group_name=GROUP, description="Policies by tenant, status and type."),
    dg.AssetSpec(
        BACKLOG, group_name=GROUP,
        description="Every approval step waiting for a decision: entity, workflow, approvers, "
        "age, due time, overdue.",
    ),
    dg.AssetSpec(
        OUTCOMES, group_name=GROUP,
        description="Executions by tenant, workflow and status over the outcomes window, and "
        "every failed execution not resolved since, with its reason; the notification emails "
        "by status, and the latest that failed.",
    ),
    dg.AssetSpec(
        CHANGES, group_name=GROUP,
        description="Changes committed and not processed yet, per tenant, and the oldest one's "
        "age (the lag between a write and its workflows).",
    ),
    dg.AssetSpec(
        QUEUE, group_name=GROUP,
        description="The Redis run queue: per lane queued, running, limit, paused and oldest "
        "wait; the live workers.",
    ),
]  # fmt: skip
CHECKS = [
    dg.AssetCheckSpec(
        NO_FAILED, asset=OUTCOMES,
        description="Red while an execution is failed and not retried or cancelled.",
    ),
    dg.AssetCheckSpec(
        NO_OVERDUE, asset=BACKLOG, description="Red while an approval step is past its due time."
    ),
    dg.AssetCheckSpec(
        NO_FAILED_EMAILS, asset=OUTCOMES,
        description="Red while a notification email that failed for good within the "
        "outcomes window (GOV_PIPELINE_OUTCOMES_WINDOW) is not resent.",
    ),
    dg.AssetCheckSpec(
        LAG_OK, asset=CHANGES,
        description="Red while the oldest unprocessed change is older than "
        "GOV_PIPELINE_CHANGE_LAG_THRESHOLD seconds.",
    ),
]  # fmt: skip


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> dg.MetadataValue:
    schema = dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns])
    records = [
        dg.TableRecord({c: "" if r.get(c) is None else str(r[c]) for c in columns})
        for r in rows[:TABLE_ROWS]
    ]
    return dg.MetadataValue.table(records=records, schema=schema)


def _per_tenant(label: str, counts: dict[str, int]) -> dict[str, int]:
    top = sorted(counts, key=lambda t: (-counts[t], t))[:TENANT_FIGURES]
    return {f"{label} [{tenant}]": counts[tenant] for tenant in sorted(top)}


def _tally(pairs: Sequence[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, n in pairs:
        out[key] = out.get(key, 0) + n
    return out


def register_metadata(state: GovernanceState) -> dict[str, Any]:
    rows = state.register
    by_status = _tally([(r.status, r.policies) for r in rows])
    return {
        "policies": sum(r.policies for r in rows),
        # Every status, zero too: a plotted figure needs a value at every refresh.
        **{f"status {s}": by_status.get(s, 0) for s in PolicyStatus},
        **_per_tenant("policies", _tally([(r.tenant_id, r.policies) for r in rows])),
        "register": _table(
            [vars(r) for r in rows], ["tenant_id", "status", "policy_type", "policies"]
        ),
    }


def backlog_metadata(state: GovernanceState) -> dict[str, Any]:
    steps = state.backlog
    rows = [
        {**vars(s), "age": f"{s.age_s / 3600:.1f} h", "due": s.due_at.isoformat()[:16]
         if s.due_at else "-", "overdue": "yes" if s.overdue else "no"}
        for s in steps
    ]  # fmt: skip
    return {
        "waiting_steps": len(steps),
        "overdue_steps": len(state.overdue),
        "oldest_wait_hours": round(max((s.age_s for s in steps), default=0.0) / 3600, 2),
        **_per_tenant("waiting", _tally([(s.tenant_id, 1) for s in steps])),
        "backlog": _table(
            rows,
            [
                "approval_id",
                "tenant_id",
                "entity",
                "workflow",
                "step",
                "approvers",
                "age",
                "due",
                "overdue",
            ],
        ),
    }


def outcomes_metadata(state: GovernanceState) -> dict[str, Any]:
    outcomes = state.outcomes
    by_status = _tally([(s, n) for _, _, s, n in outcomes.by_workflow])
    failed_by_tenant = _tally([(f.tenant_id, 1) for f in outcomes.failed])
    return {
        "window_since": outcomes.since.isoformat(timespec="seconds"),
        **{f"executions {s}": by_status.get(s, 0) for s in ExecutionStatus},
        "unresolved_failed": outcomes.failed_total,
        **_per_tenant("failed", failed_by_tenant),
        "by_workflow": _table(
            [
                {"tenant": t, "workflow": w, "status": s, "executions": n}
                for t, w, s, n in outcomes.by_workflow
            ],
            ["tenant", "workflow", "status", "executions"],
        ),
        "failed_executions": _table(
            [vars(f) for f in outcomes.failed],
            ["execution_id", "tenant_id", "workflow", "entity", "reason", "finished_at"],
        ),
        **{f"emails {s}": n for s, n in state.emails.by_status.items()},
        "failed_emails": _table(
            [{c: getattr(e, c) for c in EMAIL_COLUMNS} for e in state.emails.failed],
            EMAIL_COLUMNS,
        ),
    }


def changes_metadata(state: GovernanceState) -> dict[str, Any]:
    changes = state.changes
    return {
        "unprocessed_changes": changes.unprocessed,
        "oldest_change_age_s": round(state.change_lag_s, 1),
        **_per_tenant("unprocessed", {t: n for t, (n, _) in changes.by_tenant.items()}),
        "settled_up_to": changes.settled_up_to,
        "by_tenant": _table(
            [
                {"tenant": t, "unprocessed": n, "oldest": at.isoformat(timespec="seconds")}
                for t, (n, at) in sorted(changes.by_tenant.items())
            ],
            ["tenant", "unprocessed", "oldest"],
        ),
    }


def queue_metadata(instance: dg.DagsterInstance) -> dict[str, Any]:
    coordinator = instance.run_coordinator
    if not isinstance(coordinator, RedisRunCoordinator):
        kind = type(coordinator).__name__
        return {"coordinator": dg.MetadataValue.text(f"{kind}: no Redis queue to show")}
    status = coordinator.queue.status()
    lanes = status["lanes"]
    workers = status["workers"]
    return {
        "queued_runs": sum(int(lane["queued"]) for lane in lanes),
        "running_runs": int(status["running"]),
        "live_workers": sum(1 for w in workers if w["alive"]),
        "paused_lanes": dg.MetadataValue.text(", ".join(status["paused"]) or "none"),
        "lanes": _table(
            [{**lane, "paused": "PAUSED" if lane["paused"] else "no"} for lane in lanes],
            ["lane", "queued", "running", "limit", "paused", "oldest_wait_s"],
        ),
        "workers": _table(
            [
                {**w, "alive": "yes" if w["alive"] else "no", "lanes": ",".join(w.get("lanes", []))}
                for w in workers
            ],
            ["worker_id", "host", "mode", "lanes", "concurrency", "alive"],
        ),
    }


def _check(asset: dg.AssetKey, verdict: Verdict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=verdict.check,
        passed=verdict.passed,
        description=verdict.sentence,
        metadata={verdict.figure[0]: verdict.figure[1]},
    )


def _settled_before(instance: dg.DagsterInstance) -> int:
    """Where the last refresh found every change processed (read on from there)."""
    entry = instance.get_latest_materialization_event(CHANGES)
    event = entry.asset_materialization if entry is not None else None
    value = event.metadata.get("settled_up_to") if event is not None else None
    return int(value.value) if isinstance(value, dg.IntMetadataValue) and value.value else 0


@dg.multi_asset(
    specs=SPECS, check_specs=CHECKS, name="governance_state", op_tags={LANE_TAG: "reporting"}
)
@lane_retries
def governance_state(
    context: dg.AssetExecutionContext, database: DatabaseResource
) -> Iterator[dg.MaterializeResult[None] | dg.AssetCheckResult]:
    """Read the governed state once and show it as the five governance assets."""
    state = read_governance_state(
        database.sessions(), database.settings(), datetime.now(UTC),
        _settled_before(context.instance),
    )  # fmt: skip
    yield dg.MaterializeResult(asset_key=REGISTER, metadata=register_metadata(state))
    yield dg.MaterializeResult(asset_key=BACKLOG, metadata=backlog_metadata(state))
    yield dg.MaterializeResult(asset_key=OUTCOMES, metadata=outcomes_metadata(state))
    yield dg.MaterializeResult(asset_key=CHANGES, metadata=changes_metadata(state))
    yield dg.MaterializeResult(asset_key=QUEUE, metadata=queue_metadata(context.instance))
    yield _check(OUTCOMES, failed_verdict(state))
    yield _check(BACKLOG, overdue_verdict(state))
    yield _check(CHANGES, lag_verdict(state))
    yield _check(OUTCOMES, emails_verdict(state))


refresh_governance = dg.define_asset_job(
    "refresh_governance",
    selection=[governance_state],
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "reporting"},
    description="Refresh the governance assets (register, approvals, outcomes, changes, queue).",
)

governance_schedule = dg.ScheduleDefinition(
    name="refresh_governance_every_5_minutes",
    job=refresh_governance,
    cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

ENDED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def refresh_sensor(settings: Settings, watched: Sequence[str]) -> dg.SensorDefinition:
    """`governance_refresh_sensor`: a refresh when a run of `watched` jobs ended since the
    last one (at most one per `settings.governance_refresh_s`)."""

    @dg.sensor(
        name="governance_refresh_sensor",
        job=refresh_governance,
        minimum_interval_seconds=daemon_interval(settings.governance_refresh_s),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Refreshes the governance assets after runs that change the governed "
        "state ended (processing, decisions, retries, cancellations, imports, deadlines).",
    )
    def governance_refresh_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = datetime.now(UTC)
        since = datetime.fromisoformat(context.cursor) if context.cursor else None
        if since is not None:
            runs = context.instance.get_runs(
                dg.RunsFilter(statuses=ENDED, updated_after=since), limit=500
            )
            ended = [r for r in runs if r.job_name in watched]
            if not ended:
                return dg.SensorResult(
                    skip_reason=dg.SkipReason(f"No run of {', '.join(watched)} ended since "
                                              f"{since.isoformat(timespec='seconds')}."),
                    cursor=context.cursor,
                )  # fmt: skip
        request = dg.RunRequest(run_key=f"refresh-{now.isoformat()}")
        return dg.SensorResult(run_requests=[request], cursor=now.isoformat())

    return governance_refresh_sensor
