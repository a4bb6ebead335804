"""The other jobs: a workflow by hand, webhook deliveries, deadlines, escalation, import."""

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg

from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.domain.retry import RetryPolicy
from gov_pipeline.engine.manual import start_manual_execution
from gov_pipeline.orchestration.jobs import MAX_ATTEMPTS, POLICY_RETRY, permanent_errors
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners import deadlines, escalation, importer
from gov_pipeline.runners.deliveries import deliver_pending
from gov_pipeline.runners.retries import attempt_execution


class ExecuteWorkflowConfig(dg.Config):
    """Which workflow to run, for which policy."""

    tenant_id: str
    workflow: str
    policy_id: int


@dg.op(retry_policy=POLICY_RETRY)
def run_workflow(
    context: dg.OpExecutionContext, config: ExecuteWorkflowConfig, database: DatabaseResource
) -> None:
    """Create the manual execution (once per run) and run it."""
    sessions = database.sessions()
    with permanent_errors(), sessions.begin() as session:
        execution = start_manual_execution(
            session, tenant_id=config.tenant_id, workflow=config.workflow,
            policy_id=config.policy_id, request_key=context.run_id,
            actor=f"dagster:{context.run_id}",
        )  # fmt: skip
        execution_id, status, reason = execution.id, execution.status, execution.status_reason
    report = None
    if status == "pending":
        report = attempt_execution(
            sessions, execution_id, database.settings(), MAX_ATTEMPTS, context.run_id
        )
    with sessions.begin() as session:
        from gov_pipeline.db.models import WorkflowExecution

        final = session.get(WorkflowExecution, execution_id)
        assert final is not None
        status, reason = final.status, final.status_reason or final.error
    context.add_output_metadata(
        {
            "execution_id": execution_id,
            "status": status,
            "reason": dg.MetadataValue.text(reason or "-"),
            "actions_run": dg.MetadataValue.json(report.actions if report else []),
        }
    )


@dg.job(
    executor_def=dg.in_process_executor,
    tags={"gov/queue": "policy"},
    description="Run one workflow for one policy by hand (config: tenant_id, workflow, policy_id).",
)
def execute_workflow() -> None:
    run_workflow()


@dg.op
def deliver_webhooks(context: dg.OpExecutionContext, database: DatabaseResource) -> None:
    """Send every pending webhook delivery (each retried up to its max_attempts, 1 s apart)."""
    stats = deliver_pending(database.sessions(), database.settings())
    context.add_output_metadata(
        {"attempts": stats.attempts, "delivered": stats.delivered, "failed": stats.failed}
    )


@dg.job(
    executor_def=dg.in_process_executor,
    tags={"gov/queue": "notification"},
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
def escalate(
    context: dg.OpExecutionContext, config: AsOfConfig, database: DatabaseResource
) -> None:
    """Escalate approval steps past their due time (once per step)."""
    report = escalation.escalate_overdue(
        database.sessions(), database.settings(), now=_as_of(config)
    )
    context.add_output_metadata(
        {"escalated": dg.MetadataValue.json(report.escalated), "notified": report.notified}
    )


@dg.job(
    executor_def=dg.in_process_executor,
    tags={"gov/queue": "notification"},
    description="Notify the escalation target of approval steps past their due time.",
)
def escalate_overdue_approvals() -> None:
    escalate()


@dg.op
def remind(context: dg.OpExecutionContext, config: AsOfConfig, database: DatabaseResource) -> None:
    """Run on_deadline_approaching / on_deadline_passed workflows for due policies."""
    today: date = _as_of(config).date()
    report = deadlines.run_review_reminders(
        database.sessions(), database.settings(), today=today, run_id=context.run_id,
        retry=RetryPolicy(max_attempts=MAX_ATTEMPTS, delay_s=2.0),
    )  # fmt: skip
    context.add_output_metadata(
        {
            "today": today.isoformat(), "created": report.created, "ran": report.ran,
            "skipped": report.skipped, "failed": report.failed,
            "by_workflow": dg.MetadataValue.json(report.by_workflow),
        }
    )  # fmt: skip


@dg.job(
    executor_def=dg.in_process_executor,
    tags={"gov/queue": "policy"},
    description="Daily: review reminders from next_review_date and days_before_deadline.",
)
def policy_review_reminders() -> None:
    remind()


class ImportConfig(dg.Config):
    """A CSV or JSON file of policies to create in a tenant."""

    path: str
    tenant_id: str
    chunk_size: int = 500
    format: str | None = None


@dg.op
def import_file(
    context: dg.OpExecutionContext, config: ImportConfig, database: DatabaseResource
) -> None:
    """Validate the whole file, then create its policies in chunks, logging progress."""
    with permanent_errors():
        if config.chunk_size < 1:
            raise InvalidInputError("chunk_size", "must be >= 1")
        rows = importer.read_import_file(Path(config.path), config.format)
    context.log.info(f"{len(rows)} row(s) read from {config.path}")

    def progress(done: int, total: int) -> None:
        context.log.info(f"imported {done}/{total} policies ({100 * done // max(total, 1)}%)")

    with permanent_errors():
        report = importer.import_policies(
            database.sessions(), tenant_id=config.tenant_id, rows=rows,
            chunk_size=config.chunk_size, actor=f"import:{context.run_id}", on_progress=progress,
        )  # fmt: skip
    context.add_output_metadata(
        {
            "created": report.created, "chunks": report.chunks,
            "first_id": report.first_id or 0, "last_id": report.last_id or 0,
            "seconds": round(report.seconds, 3),
        }
    )  # fmt: skip


@dg.job(
    executor_def=dg.in_process_executor,
    tags={"gov/queue": "import"},
    description="Bulk import of policies from a CSV or JSON file (config: path, tenant_id).",
)
def import_policies() -> None:
    import_file()


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
