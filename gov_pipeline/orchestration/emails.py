"""Email of notifications in Dagster: the `deliver_emails` job (the notification lane) and
the schedule that starts it every minute while emails wait. The op calls one runner."""

# No "from __future__ import annotations": Dagster reads op and resource annotations at runtime.

import dagster as dg

from gov_pipeline.domain.emails import NOTIFICATION_LANE_MAX_ATTEMPTS
from gov_pipeline.orchestration.common import LANE_TAG
from gov_pipeline.orchestration.heartbeat import beating_in_process_executor
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners.emails import pending_emails, send_pending

EMAIL_OFF = (
    "Email is off: GOV_PIPELINE_SMTP_HOST is not set in this process's environment, so "
    "nothing is sent (and no email is queued)."
)


@dg.op
def send_emails(context: dg.OpExecutionContext, database: DatabaseResource) -> None:
    """Send every pending email, each retried by the notification lane's rule (10 attempts,
    1 s apart); one that runs out of attempts ends failed, and the run still succeeds."""
    smtp = database.settings().smtp
    if smtp is None:
        context.log.warning(EMAIL_OFF)
        context.add_output_metadata({"attempts": 0, "sent": 0, "failed": 0})
        return
    stats = send_pending(database.sessions(), smtp)
    failed = sorted(stats.failed)
    if failed:
        context.log.warning(
            f"{len(failed)} email(s) failed after {NOTIFICATION_LANE_MAX_ATTEMPTS} attempts "
            f"(ids {', '.join(map(str, failed))}; the first: {stats.failed[failed[0]]}): see "
            "`gov-pipeline notifications emails --status failed`, fix the cause, then "
            "`gov-pipeline notifications resend-emails`."
        )
    context.add_output_metadata(
        {
            "attempts": stats.attempts,
            "sent": stats.sent,
            "failed": len(failed),
            "failed_ids": dg.MetadataValue.json(failed),
        }
    )


@dg.job(
    executor_def=beating_in_process_executor,
    tags={LANE_TAG: "notification"},
    description="Send queued notification emails by SMTP (the notification lane: 10 attempts, "
    "1 s apart).",
)
def deliver_emails() -> None:
    send_emails()


@dg.schedule(
    name="deliver_emails_every_minute",
    job=deliver_emails,
    cron_schedule="* * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Starts deliver_emails when emails wait to be sent; skips otherwise.",
)
def deliver_emails_schedule(
    context: dg.ScheduleEvaluationContext, database: DatabaseResource
) -> dg.RunRequest | dg.SkipReason:
    if database.settings().smtp is None:
        return dg.SkipReason(EMAIL_OFF)
    waiting = pending_emails(database.sessions())
    if not waiting:
        return dg.SkipReason("No email is waiting to be sent.")
    context.log.info(f"{waiting} email(s) wait to be sent")
    return dg.RunRequest()
