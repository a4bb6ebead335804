"""The one Dagster composition root (workspace.yaml and [tool.dagster] point here): the jobs,
schedules, sensors and resources, with the sensors built from the settings read here."""

from __future__ import annotations

import dagster as dg

from gov_pipeline.config import Settings, load_settings
from gov_pipeline.orchestration.audit import export_audit
from gov_pipeline.orchestration.compliance import compliance_report, report_compliance
from gov_pipeline.orchestration.emails import deliver_emails, deliver_emails_schedule
from gov_pipeline.orchestration.governance import (
    governance_schedule,
    governance_state,
    refresh_governance,
    refresh_sensor,
)
from gov_pipeline.orchestration.imports import import_records
from gov_pipeline.orchestration.manual import execute_workflow
from gov_pipeline.orchestration.operator_jobs import (
    cancel_execution_job,
    complete_review_job,
    decide_approval,
    retry_executions_job,
)
from gov_pipeline.orchestration.processing import process_changes
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.orchestration.scheduled import (
    deliver_notifications,
    deliveries_schedule,
    escalate_overdue_approvals,
    escalation_schedule,
    policy_review_reminders,
    reminders_schedule,
)
from gov_pipeline.orchestration.scheduled_triggers import run_scheduled_workflows, scheduled_sensor
from gov_pipeline.orchestration.sensors import change_sensor, run_failure_sensor
from gov_pipeline.orchestration.sweeper import sweeper_sensor

# The jobs whose runs change the governed state (a refresh of its assets follows them).
STATE_JOBS = [
    process_changes,
    execute_workflow,
    decide_approval,
    retry_executions_job,
    cancel_execution_job,
    complete_review_job,
    deliver_notifications,
    deliver_emails,
    escalate_overdue_approvals,
    policy_review_reminders,
    import_records,
    run_scheduled_workflows,
]


def build_definitions(settings: Settings) -> dg.Definitions:
    """Everything the code location serves, for `settings`."""
    return dg.Definitions(
        assets=[governance_state, compliance_report],
        jobs=[*STATE_JOBS, refresh_governance, export_audit, report_compliance],
        schedules=[escalation_schedule, reminders_schedule, deliveries_schedule,
                   deliver_emails_schedule, governance_schedule],
        sensors=[
            change_sensor(settings), run_failure_sensor(settings), sweeper_sensor(settings),
            scheduled_sensor(settings),
            refresh_sensor(settings, [job.name for job in STATE_JOBS]),
        ],
        resources={"database": DatabaseResource()},
    )  # fmt: skip


defs = build_definitions(load_settings())
