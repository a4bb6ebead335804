"""Manual executions: create the execution of one workflow for one entity on request (the
`execute_workflow` job, the launchpad); runners/manual.py runs it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gov_pipeline.db.bulk import insert_ignore
from gov_pipeline.db.models import WorkflowExecution
from gov_pipeline.domain.entities import kind_of
from gov_pipeline.domain.errors import NotFoundError
from gov_pipeline.domain.statuses import ExecutionStatus, Trigger
from gov_pipeline.engine.facts import entity_only_facts
from gov_pipeline.services.entities import load_entity
from gov_pipeline.services.workflows import get_workflow, load_version


def start_manual_execution(
    session: Session,
    *,
    tenant_id: str,
    workflow: str,
    entity_id: int | str,
    request_key: str,
    actor: str | None = None,
) -> WorkflowExecution:
    """Create (once per `request_key`) an execution of `workflow` for the record
    `entity_id` of the workflow's entity type.

    The workflow's conditions are evaluated against the record as it is now, with trigger
    `manual`; if they are false the execution is recorded as skipped with the reason.
    Inactive workflows may be run by hand (that is what manual runs are for).

    Raises:
        NotFoundError: unknown workflow or record in this tenant.
    """
    wf = get_workflow(session, tenant_id, workflow)
    loaded = load_version(session, wf)
    entity_type = loaded.definition.entity_type
    entity = load_entity(session, tenant_id, entity_type, str(entity_id))
    if entity is None or entity.deleted_at is not None:
        raise NotFoundError(kind_of(entity_type).noun, entity_id, tenant_id)
    # A plain str in the facts: a failed condition quotes it by repr.
    facts = entity_only_facts(entity, Trigger.MANUAL.value, actor)
    matched = loaded.condition.evaluate(facts)
    now = datetime.now(UTC)
    dedupe_key = f"manual:{request_key}"
    insert_ignore(
        session,
        WorkflowExecution,
        {
            "tenant_id": tenant_id, "workflow_id": wf.id, "workflow_version": loaded.version,
            "dedupe_key": dedupe_key, "change_id": None,
            "entity_type": loaded.definition.entity_type, "entity_id": str(entity.id),
            "status": ExecutionStatus.PENDING if matched else ExecutionStatus.SKIPPED,
            "status_reason": None if matched
            else "conditions not met: " + "; ".join(loaded.condition.explain(facts)),
            "input": facts, "chain_depth": 0, "attempts": 0,
            "finished_at": None if matched else now, "created_at": now, "updated_at": now,
        },
    )  # fmt: skip
    return session.scalars(
        select(WorkflowExecution).where(
            WorkflowExecution.workflow_id == wf.id, WorkflowExecution.dedupe_key == dedupe_key
        )
    ).one()
