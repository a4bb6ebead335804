"""What a Dagster run did to the governed state: the executions it ran (claimed, continued,
retried or failed), their workflows and how each stands, and so the run's governance
outcome: `failed` when one of them failed, `awaiting_approval` when one waits, else `ok`."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import Workflow, WorkflowExecution
from gov_pipeline.domain.statuses import ExecutionStatus, RunOutcome


@dataclass(frozen=True)
class ExecutionOutcome:
    execution_id: int
    tenant_id: str
    workflow: str
    entity: str  # "policy 12"
    status: str
    reason: str | None


@dataclass(frozen=True)
class RunOutcomes:
    """The executions a run touched, in id order."""

    executions: list[ExecutionOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[ExecutionOutcome]:
        return [e for e in self.executions if e.status == ExecutionStatus.FAILED]

    @property
    def outcome(self) -> RunOutcome:
        if self.failed:
            return RunOutcome.FAILED
        if any(e.status == ExecutionStatus.AWAITING_APPROVAL for e in self.executions):
            return RunOutcome.AWAITING_APPROVAL
        return RunOutcome.OK

    @property
    def workflows(self) -> list[str]:
        return sorted({e.workflow for e in self.executions})


def run_outcomes(sessions: sessionmaker[Session], run_id: str) -> RunOutcomes:
    """The executions whose last attempt was run `run_id`'s (it records itself on each)."""
    with sessions.begin() as session:
        return RunOutcomes(_executions(session, run_id))


def _executions(session: Session, run_id: str) -> list[ExecutionOutcome]:
    rows = session.execute(
        select(WorkflowExecution, Workflow.name)
        .join(Workflow, Workflow.id == WorkflowExecution.workflow_id)
        .where(WorkflowExecution.dagster_run_id == run_id)
        .order_by(WorkflowExecution.id)
    )
    return [
        ExecutionOutcome(
            e.id, e.tenant_id, str(name), f"{e.entity_type} {e.entity_id}", e.status,
            e.error or e.status_reason,
        )
        for e, name in rows
    ]  # fmt: skip
