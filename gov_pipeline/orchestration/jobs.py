"""Dagster jobs and their ops. Ops parse config, take resources, call a service, and attach
metadata; the work itself lives in `gov_pipeline.services`."""

# No "from __future__ import annotations": Dagster reads op and config annotations at runtime.

from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg
from sqlalchemy import func, select

from gov_pipeline.db.models import EntityChange, WorkflowExecution
from gov_pipeline.domain.batching import compact_ids
from gov_pipeline.domain.errors import GovPipelineError, InvalidInputError, TransientExecutionError
from gov_pipeline.engine.matching import match_changes
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners.batch import plan_batch, process_batch
from gov_pipeline.runners.deliveries import deliver_pending


@contextmanager
def permanent_errors() -> Iterator[None]:
    """Bad input (unknown ids, illegal moves, invalid config) fails the op at once: a
    retry cannot fix it. Anything else propagates and the op's retry policy applies."""
    try:
        yield
    except GovPipelineError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


# The policy queue of the original: 5 attempts, exponential backoff from 2 s.
POLICY_RETRY = dg.RetryPolicy(max_retries=4, delay=2, backoff=dg.Backoff.EXPONENTIAL)
MAX_ATTEMPTS = POLICY_RETRY.max_retries + 1


class ChangesConfig(dg.Config):
    """The changes a run processes (the sensor fills this in)."""

    change_ids: list[int]


@dg.op(retry_policy=POLICY_RETRY)
def load_changes(
    context: dg.OpExecutionContext, config: ChangesConfig, database: DatabaseResource
) -> list[int]:
    """The run's changes not yet processed, preceded by any earlier unprocessed change of the
    same policies (catch-up), in commit order."""
    sessions = database.sessions()
    with permanent_errors(), sessions.begin() as session:
        if not config.change_ids:
            raise InvalidInputError("change_ids", "a run needs at least one change")
        rows = session.execute(
            select(EntityChange.id, EntityChange.tenant_id, EntityChange.entity_id).where(
                EntityChange.id.in_(config.change_ids)
            )
        ).all()
        missing = sorted(set(config.change_ids) - {r[0] for r in rows})
        if missing:
            raise InvalidInputError("change_ids", f"unknown change(s): {compact_ids(missing)}")
        todo, catch_up, already = plan_batch(session, config.change_ids)
    policies = sorted({f"{tenant}/{entity}" for _, tenant, entity in rows})
    context.add_output_metadata(
        {
            "changes": len(todo),
            "change_ids": compact_ids(todo),
            "catch_up": dg.MetadataValue.text(compact_ids(catch_up) or "none"),
            "already_processed": dg.MetadataValue.text(compact_ids(already) or "none"),
            "policies": dg.MetadataValue.text(", ".join(policies[:50])),
        }
    )
    return todo


MATCH_CHUNK = 500  # changes matched per transaction


@dg.op(retry_policy=POLICY_RETRY)
def match_workflows(
    context: dg.OpExecutionContext, database: DatabaseResource, change_ids: list[int]
) -> list[int]:
    """Evaluate every candidate workflow's conditions; create the executions (once)."""
    sessions = database.sessions()
    settings = database.settings()
    matched: Counter[str] = Counter()
    failed: dict[str, list[str]] = {}
    refused: dict[str, str] = {}
    created = 0
    for start in range(0, len(change_ids), MATCH_CHUNK):
        with sessions.begin() as session:
            changes = session.scalars(
                select(EntityChange)
                .where(EntityChange.id.in_(change_ids[start : start + MATCH_CHUNK]))
                .order_by(EntityChange.id)
            ).all()
            reports = match_changes(session, changes, settings)
        for report in reports:
            matched.update(report.matched)
            for name, reasons in report.skipped.items():
                failed.setdefault(name, reasons[:3])
            refused.update(report.refused)
            created += len(report.executions)
    context.add_output_metadata(
        {
            "workflows_matched": dg.MetadataValue.json(dict(matched)),
            "conditions_failed": dg.MetadataValue.json(failed),
            "refused": dg.MetadataValue.json(refused),
            "executions_to_run": created,
        }
    )
    return change_ids


@dg.op(retry_policy=POLICY_RETRY)
def execute_actions(
    context: dg.OpExecutionContext, database: DatabaseResource, change_ids: list[int]
) -> list[int]:
    """Run the pending executions (and approval follow-ups) of the changes, in order, and
    mark each change processed with its effects.

    Changes run in chunks, one transaction each. A failed attempt is counted on its
    execution in the database; one that failed for good (a permanent error, or its
    attempts used up) is failed, its owner told, and the run moves on. Otherwise the op
    raises, its retry policy applies, and the retry starts after what is done.
    """
    sessions = database.sessions()
    settings = database.settings()

    def retry_later(change_id: int, failures: int, error: BaseException) -> None:
        context.log.warning(f"change {change_id}: {error}; the op will be retried")
        raise TransientExecutionError(f"change {change_id}: {error}") from error

    report = process_batch(
        sessions,
        change_ids,
        settings,
        retry_later,
        max_attempts=MAX_ATTEMPTS,
        match=False,
        run_id=context.run_id,
        processed_by=f"dagster:{context.run_id}",
    )
    actions: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for ran in report.ran:
        statuses[ran.status] += 1
        actions.update(step.split(".")[-1] if "." in step else step for step in ran.actions)
    for ran in report.ran[:200]:
        context.log.debug(
            f"execution {ran.execution_id} ({ran.workflow}) {ran.status}: "
            f"{', '.join(ran.actions) or 'nothing to do'}"
        )
    context.add_output_metadata(
        {
            "changes_processed": len(report.changes),
            "executions_run": sum(statuses.values()),
            "executions_by_status": dg.MetadataValue.json(dict(statuses)),
            "actions_run": dg.MetadataValue.json(dict(actions)),
            "transactions": report.commits,
            "failed_attempts": report.failures,
        }
    )
    return change_ids


@dg.op(retry_policy=POLICY_RETRY)  # delivery and the summary are safe to repeat
def record_outcome(
    context: dg.OpExecutionContext, database: DatabaseResource, change_ids: list[int]
) -> None:
    """Send queued webhooks and summarise the executions of the run's changes."""
    sessions = database.sessions()
    delivered = deliver_pending(sessions, database.settings())
    with sessions.begin() as session:
        by_status = dict(
            session.execute(
                select(WorkflowExecution.status, func.count())
                .where(WorkflowExecution.change_id.in_(change_ids))
                .group_by(WorkflowExecution.status)
            ).all()
        )
    context.add_output_metadata(
        {
            "executions_by_status": dg.MetadataValue.json(by_status),
            "webhooks_delivered": delivered.delivered,
            "webhooks_failed": delivered.failed,
        }
    )


@dg.job(
    executor_def=dg.in_process_executor,
    tags={"gov/queue": "policy"},
    description="Process captured policy changes: load → match workflows → run actions → record.",
)
def process_policy_changes() -> None:
    record_outcome(execute_actions(match_workflows(load_changes())))


def change_ids_of_run(run_config: Mapping[str, Any]) -> list[int]:
    """The change ids a process_policy_changes run was given (empty if none)."""
    try:
        ids = run_config["ops"]["load_changes"]["config"]["change_ids"]
    except (KeyError, TypeError):
        return []
    return [int(i) for i in ids] if isinstance(ids, list) else []
