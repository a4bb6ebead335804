"""`create_task`: a `todo` task, assigned to a user or the entity's owner; the task is a
governed entity, so its creation is itself a change (made by this execution: the task row
names it, and so does the capture context of an unbuffered write)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from gov_pipeline.db.bulk import buffer_rows, buffering, draw_id
from gov_pipeline.db.models import Task
from gov_pipeline.domain.definitions import CreateTaskAction
from gov_pipeline.domain.statuses import NotificationType, TaskStatus
from gov_pipeline.engine.actions.base import ActionContext
from gov_pipeline.services import notifications, records


def create_task(ctx: ActionContext, action: CreateTaskAction) -> dict[str, Any]:
    assignee = action.assignee
    if assignee == "owner":
        assignee = records.owner_of(ctx.entity) if ctx.entity is not None else None
    due = action.due_date
    if action.due_in_days is not None:
        due = date.today() + timedelta(days=action.due_in_days)
    buffered = buffering(ctx.session)
    if not buffered:  # else the capture reads the writing execution off the task's row
        records.write_as(ctx.session, ctx.writer())
    task = Task(
        id=draw_id(ctx.session, "tasks") if buffered else None,
        tenant_id=ctx.execution.tenant_id,
        created_by=ctx.actor,
        updated_by=ctx.actor,
        title=ctx.render(action.title)[:500],
        description=ctx.render(action.description),
        priority=action.priority,
        status=TaskStatus.TODO,
        assignee_id=assignee,
        due_date=due,
        entity_type=ctx.execution.entity_type,
        entity_id=ctx.execution.entity_id,
        execution_id=ctx.execution.id,
        action_run_id=ctx.action_run.id,
    )
    if not buffer_rows(ctx.session, [task]):  # else written with the chunk's rows, at its end
        ctx.session.add(task)
        ctx.session.flush()
    if assignee:
        notifications.send(
            ctx.session,
            tenant_id=ctx.execution.tenant_id,
            recipients=[assignee],
            type=NotificationType.TASK_ASSIGNED,
            title=f"Task assigned: {task.title}",
            entity_type=ctx.execution.entity_type,
            entity_id=ctx.execution.entity_id,
            execution_id=ctx.execution.id,
            action_run_id=ctx.action_run.id,
        )
    return {"task_id": task.id, "assignee": assignee, "due": due.isoformat() if due else None}
