"""The scheduled jobs: webhook deliveries, escalation of overdue approvals, review
reminders, and their schedules. Each op calls one runner."""

# No "from __future__ import annotations": Dagster reads op and config annotations at runtime.

from datetime import UTC, date, datetime

import dagster as dg

from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.orchestration.common import LANE_TAG, lane_retries, run_rule
from gov_pipeline.orchestration.heartbeat import beating_in_process_executor
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners import deadlines, escalation
from gov_pipeline.runners.deliveries import deliver_pending


@dg.op
@lane_retries
def deliver_webhooks(context: dg.OpExecutionContext, database: DatabaseResource) -> None:
    """Send every pending webhook delivery (each retried up to its max_attempts, 1 s apart)."""
    stats = deliver_pending(database.sessions(), database.settings())
    context.add_output_metadata(
        {"attempts": stats.attempts, "delivered": stats.delivered, "failed": stats.failed}
    )


@dg.job(
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "notification"},
    description="Send queued webhook deliveries (the notification queue: 10 attempts, 1 s).",
)
def deliver_notifications() -> None:
    deliver_webhooks()


class AsOfConfig(dg.Config):
    """Optional clock override (ISO date or datetime), for catching up or testing."""

    as_of: str | None = None


def _as_of(config: AsOfConfig) -> datetime:
    if not config.as_of:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(config.as_of)
    except ValueError:
        raise InvalidInputError("as_of", f"not an ISO date or datetime: {config.as_of!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dg.op
@lane_retries
def escalate(
    context: dg.OpExecutionContext, config: AsOfConfig, database: DatabaseResource
) -> None:
    """Escalate approval steps past their due time (once per step)."""
    report = escalation.escalate_overdue(
        database.sessions(), database.settings(), now=_as_of(config)
    )
    context.add_output_metadata(
        {
            "escalated": dg.MetadataValue.json(report.escalated),
            "reassigned": dg.MetadataValue.json(report.reassigned),
            "notified": report.notified,
        }
    )


@dg.job(
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "notification"},
    description="Notify the escalation target of approval steps past their due time.",
)
def escalate_overdue_approvals() -> None:
    escalate()


@dg.op
@lane_retries
def remind(context: dg.OpExecutionContext, config: AsOfConfig, database: DatabaseResource) -> None:
    """Run on_deadline_approaching / on_deadline_passed workflows for due policies."""
    today: date = _as_of(config).date()
    report = deadlines.run_review_reminders(
        database.sessions(), database.settings(), today=today, run_id=context.run_id,
        retry=run_rule(context).retry,
    )  # fmt: skip
    context.add_output_metadata(
        {
            "today": today.isoformat(), "created": report.created, "ran": report.ran,
            "skipped": report.skipped, "failed": report.failed,
            "by_workflow": dg.MetadataValue.json(report.by_workflow),
        }
    )  # fmt: skip


@dg.job(
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "policy"},
    description="Daily: review reminders from next_review_date and days_before_deadline.",
)
def policy_review_reminders() -> None:
    remind()


escalation_schedule = dg.ScheduleDefinition(
    name="escalate_overdue_approvals_every_15_minutes",
    job=escalate_overdue_approvals,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
reminders_schedule = dg.ScheduleDefinition(
    name="policy_review_reminders_daily",
    job=policy_review_reminders,
    cron_schedule="0 6 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
deliveries_schedule = dg.ScheduleDefinition(
    name="deliver_notifications_every_5_minutes",
    job=deliver_notifications,
    cron_schedule="*/5 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Sweeps webhook deliveries a crashed run left pending.",
)
