"""Every error the project raises on purpose, in one place.

Two kinds, and every error is one of them (or says, like `ActionFailedError`, which):
`PermanentError` (a retry cannot help: bad input, unknown ids, an illegal move, bad
configuration; an op fails at once) and `TransientError` (a retry may succeed; an op's
retry policy applies). `GovPipelineError` is their common base, never raised itself.
"""

from __future__ import annotations

from dataclasses import dataclass


class GovPipelineError(Exception):
    """Base class: an expected failure with a one-line message for the user."""


class PermanentError(GovPipelineError):
    """Retrying cannot help: the input, the state or the configuration must change."""


class TransientError(GovPipelineError):
    """A retry may succeed (a connection cut, a deadlock, a receiver that was down)."""


class NotFoundError(PermanentError):
    """An entity the caller named does not exist (in the caller's tenant)."""

    def __init__(self, entity: str, ident: object, tenant_id: str | None = None) -> None:
        where = f" in tenant {tenant_id!r}" if tenant_id is not None else ""
        super().__init__(f"{entity} {ident!r} not found{where}")
        self.entity = entity
        self.ident = ident


class IllegalTransitionError(PermanentError):
    """A status move the lifecycle does not allow."""

    def __init__(self, from_status: str, to_status: str) -> None:
        super().__init__(f"illegal status transition: {from_status} -> {to_status}")
        self.from_status = from_status
        self.to_status = to_status


class InvalidInputError(PermanentError):
    """A value the caller gave is malformed or missing (field names the culprit)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class CursorMismatchError(PermanentError):
    """A change cursor does not belong to this change table: the change at its watermark is
    gone or is another change (the database was restored or recreated behind it)."""

    def __init__(self, watermark: int, anchor: str, found: str | None) -> None:
        what = "is gone" if found is None else f"was created at {found}, not {anchor}"
        super().__init__(
            f"change {watermark}, the last one this cursor read, {what}: the application "
            "database was restored or recreated behind the cursor, and new changes would be "
            "skipped. See docs/operations.md, section 6 (Backup and restore), before resetting "
            "the cursor"
        )
        self.watermark = watermark


@dataclass(frozen=True)
class ValidationIssue:
    """One problem in a definition: where (a dotted path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class DefinitionError(PermanentError):
    """A workflow definition or condition tree is invalid; lists every issue found."""

    def __init__(self, issues: list[ValidationIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        head = f"{source}: " if source else ""
        detail = "; ".join(str(i) for i in self.issues) or "invalid definition"
        super().__init__(f"{head}{detail}")


class ConflictError(PermanentError):
    """The request does not fit the current state (e.g. deciding a closed approval)."""


class ExecutionsFailedError(PermanentError):
    """Executions a command ran ended failed (each kept with its reason, to be retried with
    `gov-pipeline executions retry`); the command exits 1 naming them."""

    def __init__(self, message: str, execution_ids: list[int]) -> None:
        super().__init__(message)
        self.execution_ids = list(execution_ids)


class PermissionDeniedError(PermanentError):
    """The actor is not allowed to do this (e.g. not a listed approver)."""


class RunFencedError(PermanentError):
    """Another worker ended this run (its worker lost its lease: cut off, or dead); what
    the run still does is refused, and its retry does the work."""

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(f"run {run_id} was ended by another worker ({reason}); refused")
        self.run_id = run_id


class ConfigurationError(PermanentError):
    """A setting read from the environment is invalid."""


class SchemaMissingError(PermanentError):
    """The application database does not exist, or exists without the schema (no Alembic
    revision). Only `gov-pipeline db upgrade` creates either."""

    def __init__(self, database: str, problem: str) -> None:
        super().__init__(
            f"database {database} {problem}: run gov-pipeline db upgrade to create it, or set "
            "GOV_PIPELINE_DATABASE_URL (or GOV_PIPELINE_HOME) to the database you meant"
        )
        self.database = database


class ActionFailedError(GovPipelineError):
    """An action raised; the caller's transaction must roll back. Raised as one of the two
    kinds below (`action_failed`): permanent when the cause is (bad data, an illegal move),
    transient otherwise."""

    def __init__(self, step_key: str, action_type: str, cause: BaseException) -> None:
        super().__init__(f"action {step_key} ({action_type}) failed: {cause}")
        self.step_key = step_key
        self.action_type = action_type
        self.cause = cause


class PermanentActionError(ActionFailedError, PermanentError):
    """An action failed in a way a retry cannot fix."""


class TransientActionError(ActionFailedError, TransientError):
    """An action failed in a way a retry may fix."""


def action_failed(step_key: str, action_type: str, cause: BaseException) -> ActionFailedError:
    """The error for an action that raised `cause`, of the kind the cause is."""
    kind = PermanentActionError if isinstance(cause, PermanentError) else TransientActionError
    return kind(step_key, action_type, cause)


class TransientExecutionError(TransientError):
    """An attempt failed in a way a retry may fix; the execution is still pending."""


class ChangeAttemptFailed(GovPipelineError):
    """An attempt at a change's work failed; `execution_id` is the execution it counts on,
    `cause` the error (of either kind). Raised inside a batch to end its chunk there."""

    def __init__(self, change_id: int, execution_id: int, cause: BaseException) -> None:
        super().__init__(f"change {change_id}, execution {execution_id}: {cause}")
        self.change_id = change_id
        self.execution_id = execution_id
        self.cause = cause
