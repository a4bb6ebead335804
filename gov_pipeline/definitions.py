"""The one Dagster composition root (workspace.yaml and [tool.dagster] point here)."""

from __future__ import annotations

import dagster as dg

from gov_pipeline.orchestration.jobs import process_policy_changes
from gov_pipeline.orchestration.more_jobs import (
    deliver_notifications,
    deliveries_schedule,
    escalate_overdue_approvals,
    escalation_schedule,
    execute_workflow,
    import_policies,
    policy_review_reminders,
    reminders_schedule,
)
from gov_pipeline.orchestration.resources import DatabaseResource, RedisResource
from gov_pipeline.orchestration.sensors import policy_change_sensor, policy_run_failure_sensor
from gov_pipeline.orchestration.sweeper import unprocessed_change_sweeper

defs = dg.Definitions(
    jobs=[
        process_policy_changes,
        execute_workflow,
        deliver_notifications,
        escalate_overdue_approvals,
        policy_review_reminders,
        import_policies,
    ],
    schedules=[escalation_schedule, reminders_schedule, deliveries_schedule],
    sensors=[policy_change_sensor, policy_run_failure_sensor, unprocessed_change_sweeper],
    resources={"database": DatabaseResource(), "redis": RedisResource()},
)
