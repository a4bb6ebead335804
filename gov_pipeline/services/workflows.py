"""Workflows: apply definitions as versions, list them, load the active ones compiled."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from gov_pipeline.db.engine import is_postgres
from gov_pipeline.db.models import Workflow, WorkflowVersion
from gov_pipeline.domain.conditions import CompiledCondition
from gov_pipeline.domain.definitions import WorkflowDefinition, parse_definition, webhook_actions
from gov_pipeline.domain.errors import DefinitionError, NotFoundError, ValidationIssue
from gov_pipeline.domain.statuses import WorkflowStatus
from gov_pipeline.services.tenants import require_tenant


@dataclass(frozen=True)
class LoadedWorkflow:
    """One workflow version, parsed and with its conditions compiled."""

    id: int
    tenant_id: str
    name: str
    version: int
    definition: WorkflowDefinition
    condition: CompiledCondition

    @property
    def owner_id(self) -> str | None:
        return self.definition.owner_id


@dataclass(frozen=True)
class ApplyResult:
    workflow: Workflow
    version: int
    outcome: Literal["created", "new_version", "unchanged"]


class _CompiledCache:
    """Parsed definitions and compiled conditions per (workflow id, version): immutable."""

    def __init__(self, size: int = 2048) -> None:
        self._items: dict[tuple[int, int], LoadedWorkflow] = {}
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> LoadedWorkflow | None:
        return self._items.get(key)

    def put(self, loaded: LoadedWorkflow) -> None:
        with self._lock:
            if len(self._items) >= self._size:
                self._items.pop(next(iter(self._items)))
            self._items[(loaded.id, loaded.version)] = loaded

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


COMPILED = _CompiledCache()


UNSIGNED_WEBHOOK = (
    "webhook has no signing secret: set secret_env, GOV_PIPELINE_WEBHOOK_SECRET, or unsigned: true"
)


def signing_issues(
    definition: WorkflowDefinition, *, webhook_secret: str | None
) -> list[ValidationIssue]:
    """The webhook actions that would have no key to sign with where this is applied.

    A webhook without `secret_env` is signed with GOV_PIPELINE_WEBHOOK_SECRET; without that
    (and without `unsigned: true`) every delivery of it would be refused.

    Args:
        definition: the definition to apply.
        webhook_secret: GOV_PIPELINE_WEBHOOK_SECRET here (`Settings.webhook_secret`).

    Returns:
        One issue per such action, at its path (`actions[1]`, `actions[2].on_approved[0]`).
    """
    if webhook_secret:
        return []
    return [
        ValidationIssue(path, UNSIGNED_WEBHOOK)
        for path, action in webhook_actions(definition)
        if action.secret_env is None and not action.unsigned
    ]


def apply_definition(
    session: Session,
    definition: WorkflowDefinition,
    *,
    actor: str | None = None,
    webhook_secret: str | None = None,
) -> ApplyResult:
    """Store `definition`: a new workflow, a new version of it, or nothing if unchanged.

    Args:
        session: the caller's transaction.
        definition: a parsed definition.
        actor: who applies it, recorded on the version.
        webhook_secret: GOV_PIPELINE_WEBHOOK_SECRET where it is applied; a webhook without
            `secret_env` or `unsigned: true` needs it.

    Raises:
        DefinitionError: a webhook would have no signing secret (see `signing_issues`);
            nothing is written.
        NotFoundError: the definition's tenant does not exist.
    """
    issues = signing_issues(definition, webhook_secret=webhook_secret)
    if issues:
        raise DefinitionError(issues, f"{definition.tenant_id}/{definition.name}")
    require_tenant(session, definition.tenant_id)
    workflow = _locked_workflow(session, definition.tenant_id, definition.name)
    fingerprint = definition.fingerprint()
    if workflow is not None:
        if _current_fingerprint(session, workflow) == fingerprint:
            return ApplyResult(workflow, workflow.current_version, "unchanged")
        version, outcome = workflow.current_version + 1, "new_version"
    else:
        workflow = Workflow(tenant_id=definition.tenant_id, name=definition.name)
        session.add(workflow)
        version, outcome = 1, "created"
    _copy_columns(workflow, definition, version)
    session.flush()
    session.add(
        WorkflowVersion(
            tenant_id=definition.tenant_id,
            workflow_id=workflow.id,
            version=version,
            definition=definition.model_dump(mode="json"),
            fingerprint=fingerprint,
            created_by=actor,
        )
    )
    session.flush()
    return ApplyResult(workflow, version, outcome)  # type: ignore[arg-type]


def _locked_workflow(session: Session, tenant_id: str, name: str) -> Workflow | None:
    """The workflow of that name, row-locked on PostgreSQL (two appliers take turns)."""
    query = select(Workflow).where(Workflow.tenant_id == tenant_id, Workflow.name == name)
    if is_postgres(session):
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def _current_fingerprint(session: Session, workflow: Workflow) -> str:
    latest = session.scalars(
        select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow.id,
            WorkflowVersion.version == workflow.current_version,
        )
    ).one()
    return latest.fingerprint


def _copy_columns(workflow: Workflow, definition: WorkflowDefinition, version: int) -> None:
    """The workflow row's columns from `definition`, as of `version`."""
    workflow.description = definition.description
    workflow.type = definition.type
    workflow.status = definition.status
    workflow.trigger = definition.trigger
    workflow.entity_type = definition.entity_type
    workflow.priority = definition.priority
    workflow.days_before_deadline = definition.days_before_deadline
    workflow.owner_id = definition.owner_id
    workflow.current_version = version


def load_version(
    session: Session, workflow: Workflow, version: int | None = None
) -> LoadedWorkflow:
    """The parsed, compiled definition of one version (default: the current one)."""
    wanted = workflow.current_version if version is None else version
    cached = COMPILED.get((workflow.id, wanted))
    if cached is not None:
        return cached
    row = session.scalars(
        select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow.id, WorkflowVersion.version == wanted
        )
    ).one_or_none()
    if row is None:
        raise NotFoundError("workflow version", f"{workflow.name}@{wanted}", workflow.tenant_id)
    # Checked when it was applied; a version applied before a check existed still loads.
    definition = parse_definition(
        row.definition, source=f"{workflow.name}@{wanted}", check_fields=False
    )
    loaded = LoadedWorkflow(
        id=workflow.id,
        tenant_id=workflow.tenant_id,
        name=workflow.name,
        version=wanted,
        definition=definition,
        condition=definition.compiled_conditions(),
    )
    COMPILED.put(loaded)
    return loaded


def active_workflows(
    session: Session, tenant_id: str, entity_type: str, triggers: Iterable[str]
) -> list[LoadedWorkflow]:
    """The tenant's active workflows for `entity_type` listening to any of `triggers`."""
    wanted = list(triggers)
    if not wanted:
        return []
    rows = session.scalars(
        select(Workflow)
        .where(
            Workflow.tenant_id == tenant_id,
            Workflow.entity_type == entity_type,
            Workflow.status == WorkflowStatus.ACTIVE,
            Workflow.trigger.in_(wanted),
        )
        .order_by(Workflow.priority.desc(), Workflow.id)
    )
    return [load_version(session, w) for w in rows]


def list_workflows(session: Session, tenant_id: str) -> list[Workflow]:
    require_tenant(session, tenant_id)
    return list(
        session.scalars(
            select(Workflow).where(Workflow.tenant_id == tenant_id).order_by(Workflow.name)
        )
    )


def get_workflow(session: Session, tenant_id: str, name_or_id: str | int) -> Workflow:
    """A workflow by name or numeric id, within the tenant.

    Raises:
        NotFoundError: no such workflow in this tenant.
    """
    query = select(Workflow).where(Workflow.tenant_id == tenant_id)
    text = str(name_or_id)
    query = (
        query.where(Workflow.id == int(text))
        if text.isdigit()
        else query.where(Workflow.name == text)
    )
    workflow = session.scalars(query).one_or_none()
    if workflow is None:
        raise NotFoundError("workflow", name_or_id, tenant_id)
    return workflow
