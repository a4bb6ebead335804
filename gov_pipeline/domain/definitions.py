"""Workflow definitions: typed models, parsing with path-precise errors, YAML/JSON loading."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from gov_pipeline.domain.conditions import CompiledCondition, compile_condition, validate_condition
from gov_pipeline.domain.entity_fields import readable_fields
from gov_pipeline.domain.errors import DefinitionError, ValidationIssue
from gov_pipeline.domain.lifecycle import LIFECYCLES
from gov_pipeline.domain.schedules import Schedule
from gov_pipeline.domain.statuses import (
    ApprovalMode,
    EntityType,
    NotificationPriority,
    NotificationType,
    Role,
    TaskPriority,
    Trigger,
    WorkflowStatus,
    WorkflowType,
)
from gov_pipeline.domain.storable import unstorable_reason

Text = Annotated[str, StringConstraints(strict=True, max_length=10_000)]
Name = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)]
Ident = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=100)]
ActionId = Annotated[str, StringConstraints(strict=True, max_length=64, pattern=r"^[a-z0-9_-]+$")]
TenantId = Annotated[
    str, StringConstraints(strict=True, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
]
EnvName = Annotated[
    str, StringConstraints(strict=True, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]
Days = Annotated[int, Field(strict=True, ge=0, le=3650)]

ACTION_TYPES = (
    "change_status",
    "notify",
    "assign",
    "create_task",
    "request_approval",
    "webhook",
)
_MODEL = ConfigDict(extra="forbid", frozen=True)


def _date_only(value: object) -> object:
    # Lax pydantic dates also take datetimes and Unix timestamps; a due date is a calendar day.
    if (
        value is None
        or isinstance(value, str)
        or (isinstance(value, date) and not isinstance(value, datetime))
    ):
        return value
    raise PydanticCustomError("date_type", "expected a date (YYYY-MM-DD)")


class _Action(BaseModel):
    model_config = _MODEL

    id: ActionId | None = None


class ChangeStatusAction(_Action):
    """Move the entity through the lifecycle (validated by the engine)."""

    type: Literal["change_status"] = "change_status"
    # A status of the workflow's entity type: checked against its lifecycle when the
    # definition is parsed (`parse_definition` passes the entity type in the context).
    to: Annotated[str, Field(strict=True, min_length=1, max_length=50)]

    @field_validator("to")
    @classmethod
    def _a_status_of_the_lifecycle(cls, to: str, info: ValidationInfo) -> str:
        context = info.context or {}
        entity_type = context.get("entity_type")
        if entity_type is None or not context.get("check_fields", True):
            return to
        lifecycle = LIFECYCLES[entity_type]
        if to not in lifecycle.transitions:
            raise PydanticCustomError(
                "unknown_status",
                "'{to}' is not a {entity_type} status (one of: {allowed})",
                {
                    "to": to,
                    "entity_type": str(entity_type),
                    "allowed": ", ".join(lifecycle.statuses),
                },
            )
        return to

    reason: Text | None = None


class NotifyAction(_Action):
    """In-app notifications to users, roles and/or the entity owner."""

    type: Literal["notify"] = "notify"
    users: list[Ident] = []
    roles: list[Role] = []
    include_owner: Annotated[bool, Field(strict=True)] = False
    notification_type: NotificationType = NotificationType.GENERAL
    priority: NotificationPriority = NotificationPriority.MEDIUM
    title: Name
    message: Text = ""

    @model_validator(mode="after")
    def _has_recipient(self) -> NotifyAction:
        if not (self.users or self.roles or self.include_owner):
            raise PydanticCustomError(
                "no_recipient", "notify needs a recipient: users, roles or include_owner: true"
            )
        return self


class AssignAction(_Action):
    """Set the policy owner or the execution's assignee."""

    type: Literal["assign"] = "assign"
    user: Ident
    target: Literal["owner", "assignee"] = "assignee"


class CreateTaskAction(_Action):
    """Create a `todo` task; `assignee: owner` means the policy owner."""

    type: Literal["create_task"] = "create_task"
    title: Name
    description: Text = ""
    priority: TaskPriority = TaskPriority.MEDIUM
    due_in_days: Days | None = None
    due_date: Annotated[date | None, BeforeValidator(_date_only)] = None
    assignee: Ident | None = None

    @model_validator(mode="after")
    def _one_due(self) -> CreateTaskAction:
        if self.due_in_days is not None and self.due_date is not None:
            raise PydanticCustomError("two_dues", "give due_in_days or due_date, not both")
        return self


class WebhookAction(_Action):
    """POST the event to a URL, HMAC-signed with the secret held in env var `secret_env` (or
    GOV_PIPELINE_WEBHOOK_SECRET); `unsigned: true` sends it without a signature."""

    type: Literal["webhook"] = "webhook"
    url: Annotated[str, StringConstraints(strict=True, max_length=2000)]
    timeout_seconds: Annotated[float, Field(strict=True, gt=0, le=30)] = 5.0
    secret_env: EnvName | None = None
    unsigned: Annotated[bool, Field(strict=True)] = False
    max_attempts: Annotated[int, Field(strict=True, ge=1, le=10)] = 10

    @model_validator(mode="after")
    def _signed_or_not(self) -> WebhookAction:
        if self.unsigned and self.secret_env is not None:
            raise PydanticCustomError(
                "unsigned_with_secret", "give secret_env or unsigned: true, not both"
            )
        return self

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        try:
            parts = urlsplit(url)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname)
            has_credentials = parts.username is not None or parts.password is not None
            _ = parts.port  # raises ValueError on an invalid port
        except ValueError:
            usable, has_credentials = False, False
        if not usable or any(ch.isspace() for ch in url):
            raise PydanticCustomError("url", "expected an http:// or https:// URL with a host")
        if has_credentials:
            raise PydanticCustomError("url", "credentials do not belong in the URL: use secret_env")
        return url


# Follow-up actions: everything except request_approval (one approval block per flow).
FollowUpAction = Annotated[
    ChangeStatusAction | NotifyAction | AssignAction | CreateTaskAction | WebhookAction,
    Field(discriminator="type"),
]


def _not_an_approval(value: object) -> object:
    if isinstance(value, dict) and value.get("type") == "request_approval":
        raise PydanticCustomError(
            "nested_approval",
            "request_approval cannot be nested in on_approved / on_rejected / "
            "on_changes_requested: one approval block per flow",
        )
    return value


FollowUps = list[Annotated[FollowUpAction, BeforeValidator(_not_an_approval)]]


class Approvers(BaseModel):
    """Who may decide a step: listed users and/or holders of a role."""

    model_config = _MODEL

    users: list[Ident] = []
    roles: list[Role] = []

    @model_validator(mode="after")
    def _someone(self) -> Approvers:
        if not (self.users or self.roles):
            raise PydanticCustomError("no_approver", "a step needs approver users or roles")
        return self


Hours = Annotated[float, Field(strict=True, gt=0, le=24 * 365)]


class Escalation(BaseModel):
    """What happens to a step nobody decided by its due time: its escalation target (`to`)
    is told; with `reassign_after_hours`, once overdue that long the step is theirs to
    decide (and no longer the original approvers'); with `repeat_every_hours`, the
    escalation repeats at that interval until the step is decided. Without `to`, the
    workflow owner, the tenant's admins and the approvers are told."""

    model_config = _MODEL

    to: Approvers | None = None
    reassign_after_hours: Annotated[float, Field(strict=True, ge=0, le=24 * 365)] | None = None
    repeat_every_hours: Hours | None = None

    @model_validator(mode="after")
    def _reassign_to_someone(self) -> Escalation:
        if self.reassign_after_hours is not None and self.to is None:
            raise PydanticCustomError(
                "reassign_to", "reassign_after_hours needs `to`: whom the step is reassigned to"
            )
        return self


class ApprovalStep(BaseModel):
    """One approval step: who decides, by when, how many of them (`quorum`: that many
    distinct approvers must approve), whether an approver may hand it to another user of
    the tenant (`allow_delegation`), and its escalation once overdue."""

    model_config = _MODEL

    approvers: Approvers
    due_in_hours: Hours | None = None
    name: Name | None = None
    quorum: Annotated[int, Field(strict=True, ge=1, le=100)] = 1
    allow_delegation: bool = False
    escalation: Escalation | None = None

    @model_validator(mode="after")
    def _coherent(self) -> ApprovalStep:
        if self.escalation is not None and self.due_in_hours is None:
            raise PydanticCustomError(
                "escalation_due",
                "escalation needs due_in_hours: a step is escalated once it is overdue",
            )
        listed = len(set(self.approvers.users))
        if not self.approvers.roles and self.quorum > listed:
            raise PydanticCustomError(
                "quorum",
                "quorum {quorum} needs at least {quorum} approvers; {listed} listed",
                {"quorum": self.quorum, "listed": listed},
            )
        return self


class RequestApprovalAction(_Action):
    """Ask for approval; the execution waits, then runs the matching follow-up list."""

    type: Literal["request_approval"] = "request_approval"
    mode: ApprovalMode = ApprovalMode.SEQUENTIAL
    steps: Annotated[list[ApprovalStep], Field(min_length=1)]
    on_approved: FollowUps = []
    on_rejected: FollowUps = []
    on_changes_requested: FollowUps = []


Action = Annotated[
    ChangeStatusAction
    | NotifyAction
    | AssignAction
    | CreateTaskAction
    | RequestApprovalAction
    | WebhookAction,
    Field(discriminator="type"),
]


class WorkflowDefinition(BaseModel):
    """One workflow, as written in a definition file."""

    model_config = _MODEL

    name: Name
    description: Text = ""
    tenant_id: TenantId
    type: WorkflowType
    status: WorkflowStatus = WorkflowStatus.ACTIVE
    trigger: Trigger
    entity_type: EntityType = EntityType.POLICY
    conditions: Any = None
    actions: Annotated[list[Action], Field(min_length=1)]
    days_before_deadline: Days | None = Field(default=None, validate_default=True)
    # For `trigger: scheduled`: when it fires (on every live record its conditions match).
    schedule: Schedule | None = Field(default=None, validate_default=True)
    priority: Annotated[int, Field(strict=True, ge=-100, le=100)] = 0
    owner_id: Ident | None = None

    @field_validator("conditions")
    @classmethod
    def _valid_conditions(cls, conditions: Any, info: ValidationInfo) -> Any:
        # `trigger` and `entity_type` are declared before `conditions`, so they are in
        # info.data when valid: the field names are checked in the same pass as the rest
        # (every issue at once). With either invalid, only the tree's shape is checked.
        entity_type, trigger = info.data.get("entity_type"), info.data.get("trigger")
        check = (info.context or {}).get("check_fields", True)
        readable = (
            readable_fields(entity_type, trigger)
            if check and entity_type is not None and trigger is not None
            else None
        )
        issues = validate_condition(conditions, "conditions", readable)
        if issues:
            summary = "; ".join(str(issue) for issue in issues)
            raise PydanticCustomError(
                "condition", "{summary}", {"summary": summary, "issues": issues}
            )
        return conditions

    @field_validator("actions")
    @classmethod
    def _unique_ids(cls, actions: list[_Action]) -> list[_Action]:
        seen: set[str] = set()
        for action in _all_actions(actions):
            if action.id is not None and action.id in seen:
                raise PydanticCustomError(
                    "duplicate_id", "duplicate action id '{id}'", {"id": action.id}
                )
            if action.id is not None:
                seen.add(action.id)
        return actions

    @field_validator("actions")
    @classmethod
    def _approval_last(cls, actions: list[_Action]) -> list[_Action]:
        # Actions after an approval would run before anyone approved: put them in on_approved.
        approvals = [i for i, a in enumerate(actions) if isinstance(a, RequestApprovalAction)]
        if len(approvals) > 1:
            raise PydanticCustomError("two_approvals", "at most one request_approval per workflow")
        if approvals and approvals[0] != len(actions) - 1:
            raise PydanticCustomError(
                "approval_not_last",
                "request_approval must be the last action: move what follows it into "
                "on_approved / on_rejected / on_changes_requested",
            )
        return actions

    @field_validator("days_before_deadline")
    @classmethod
    def _deadline_days(cls, days: int | None, info: ValidationInfo) -> int | None:
        if days is None and info.data.get("trigger") == Trigger.ON_DEADLINE_APPROACHING:
            raise PydanticCustomError(
                "deadline_days", "required when trigger is on_deadline_approaching"
            )
        return days

    @field_validator("schedule")
    @classmethod
    def _schedule_for_scheduled(
        cls, schedule: Schedule | None, info: ValidationInfo
    ) -> Schedule | None:
        # A stored version may predate the field: it keeps loading (and is never due).
        trigger = info.data.get("trigger")
        if trigger is None or not (info.context or {}).get("check_fields", True):
            return schedule
        if trigger == Trigger.SCHEDULED and schedule is None:
            raise PydanticCustomError("schedule", "required when trigger is scheduled")
        if trigger != Trigger.SCHEDULED and schedule is not None:
            raise PydanticCustomError(
                "schedule",
                "only for trigger: scheduled (this workflow's trigger is {trigger})",
                {"trigger": str(trigger)},
            )
        return schedule

    def compiled_conditions(self) -> CompiledCondition:
        """Return `conditions` compiled; callers evaluating many changes should keep it."""
        return compile_condition(self.conditions, "conditions")

    def fingerprint(self) -> str:
        """Return the sha256 hex digest of the definition's canonical JSON.

        Equal for equal content whatever the key order or omitted defaults; a new fingerprint
        means applying the file creates a new version.
        """
        data = self.model_dump(mode="json")
        # Fields added since definitions were first stored are left out at their defaults:
        # the fingerprint of a file applied before they existed stays the same, and
        # applying it again stays "unchanged".
        _drop_defaults(data, LATER_FIELDS)
        for action in data.get("actions", []):
            for step in action.get("steps") or []:
                _drop_defaults(step, LATER_STEP_FIELDS)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# Fields added after the first stored definitions, with their defaults.
LATER_FIELDS: Final = {"schedule": None}
LATER_STEP_FIELDS: Final = {"quorum": 1, "allow_delegation": False, "escalation": None}


def _drop_defaults(data: dict[str, Any], defaults: Mapping[str, object]) -> None:
    for key, default in defaults.items():
        if key in data and data[key] == default:
            del data[key]


def _all_actions(actions: list[_Action]) -> list[_Action]:
    return [action for _, action in _actions_with_paths(actions)]


def _actions_with_paths(actions: list[_Action]) -> list[tuple[str, _Action]]:
    found: list[tuple[str, _Action]] = [(f"actions[{i}]", a) for i, a in enumerate(actions)]
    for i, action in enumerate(actions):
        if isinstance(action, RequestApprovalAction):
            for name in ("on_approved", "on_rejected", "on_changes_requested"):
                follow_ups = getattr(action, name)
                found += [(f"actions[{i}].{name}[{j}]", a) for j, a in enumerate(follow_ups)]
    return found


def webhook_actions(definition: WorkflowDefinition) -> list[tuple[str, WebhookAction]]:
    """Every webhook action of `definition`, follow-up lists included, with its path
    (`actions[1]`, `actions[2].on_approved[0]`)."""
    return [
        (path, action)
        for path, action in _actions_with_paths(list(definition.actions))
        if isinstance(action, WebhookAction)
    ]


def _path(loc: tuple[int | str, ...]) -> str:
    path, previous = "", None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        # A discriminated union puts the action's tag after its list index; it is not in the data.
        elif not (isinstance(previous, int) and part in ACTION_TYPES):
            path += f".{part}" if path else part
        previous = part
    return path


def _issues(error: ValidationError) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    for detail in error.errors(include_url=False):
        kind, ctx = detail["type"], detail.get("ctx") or {}
        if kind == "condition":
            issues.extend(ctx["issues"])
            continue
        path, message = _path(detail["loc"]), _message(detail)
        if kind in ("union_tag_invalid", "union_tag_not_found", "nested_approval"):
            path += ".type"
        issues.append(ValidationIssue(path, message))
    return issues


def _message(detail: ErrorDetails) -> str:
    kind, ctx = detail["type"], detail.get("ctx") or {}
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "union_tag_invalid":
        return f"unknown action type {ctx.get('tag')!r} (one of: {', '.join(ACTION_TYPES)})"
    if kind == "union_tag_not_found":
        return f"missing action 'type' (one of: {', '.join(ACTION_TYPES)})"
    return detail["msg"]


def _entity_type_of(data: dict[Any, Any]) -> EntityType | None:
    """The definition's entity type (policy when not given); None when it is invalid (then
    its own error is reported, and statuses are not checked)."""
    try:
        return EntityType(data.get("entity_type", EntityType.POLICY))
    except (ValueError, TypeError):
        return None


def parse_definition(
    data: object, source: str | None = None, *, check_fields: bool = True
) -> WorkflowDefinition:
    """Validate raw data (a parsed YAML/JSON mapping) into a workflow definition.

    Args:
        data: the mapping, as loaded from YAML or JSON.
        source: where it came from (a file name), for the error message.
        check_fields: check the condition fields against the entity type's fields. False
            only to load a stored version, which may predate the check: it must keep loading.

    Returns:
        The definition.

    Raises:
        DefinitionError: listing every issue, each with its dotted path in `data`.
    """
    if not isinstance(data, dict):
        got = "null" if data is None else type(data).__name__
        raise DefinitionError(
            [ValidationIssue("", f"a definition is a mapping, got {got}")], source
        )
    nul = _unstorable_issues(data)
    try:
        context = {"check_fields": check_fields, "entity_type": _entity_type_of(data)}
        definition = WorkflowDefinition.model_validate(data, context=context)
    except ValidationError as exc:
        raise DefinitionError(nul + _issues(exc), source) from None
    if nul:
        raise DefinitionError(nul, source)
    return definition


def _unstorable_issues(data: dict[Any, Any]) -> list[ValidationIssue]:
    """Strings the databases cannot store: NUL, lone surrogates (the first 10 found)."""
    issues: list[ValidationIssue] = []
    stack: list[tuple[object, str]] = [(data, "")]
    seen: set[int] = set()
    while stack and len(issues) < 10:
        value, path = stack.pop()
        if isinstance(value, str):
            reason = unstorable_reason(value)
            if reason is not None:
                issues.append(ValidationIssue(path, reason))
        elif isinstance(value, dict | list | tuple) and id(value) not in seen:
            seen.add(id(value))  # YAML aliases can make a structure contain itself
            if isinstance(value, dict):
                for key, item in value.items():
                    sub = f"{path}.{key}" if path else str(key)
                    stack += [(item, sub), (key, sub)]
            else:
                stack += [(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return sorted(issues, key=lambda issue: issue.path)


def load_definitions(text: str, fmt: str, source: str) -> list[WorkflowDefinition]:
    """Parse a YAML or JSON document holding one definition or a list of them.

    Args:
        text: the document.
        fmt: `yaml` or `json`.
        source: where it came from, for error messages.

    Returns:
        The definitions, in file order.

    Raises:
        DefinitionError: a syntax error, or every issue of every definition (paths prefixed
            `[i].` when the document is a list).
    """
    data = _load(text, fmt, source)
    if isinstance(data, dict):
        return [parse_definition(data, source)]
    if not isinstance(data, list):
        got = "an empty document" if data is None else type(data).__name__
        issue = ValidationIssue("", f"expected a mapping or a list of mappings, got {got}")
        raise DefinitionError([issue], source)
    definitions: list[WorkflowDefinition] = []
    issues: list[ValidationIssue] = []
    for i, item in enumerate(data):
        try:
            definitions.append(parse_definition(item))
        except DefinitionError as exc:
            for issue in exc.issues:
                path = f"[{i}].{issue.path}" if issue.path else f"[{i}]"
                issues.append(ValidationIssue(path, issue.message))
    issues += _duplicates(definitions) if not issues else []
    if issues:
        raise DefinitionError(issues, source)
    return definitions


def _duplicates(definitions: list[WorkflowDefinition]) -> list[ValidationIssue]:
    first: dict[tuple[str, str], int] = {}
    issues = []
    for i, definition in enumerate(definitions):
        key = (definition.tenant_id, definition.name)
        if key in first:
            message = f"duplicate workflow name for tenant {key[0]!r} (also [{first[key]}])"
            issues.append(ValidationIssue(f"[{i}].name", message))
        first.setdefault(key, i)
    return issues


def _load(text: str, fmt: str, source: str) -> object:
    try:
        if fmt == "yaml":
            return yaml.safe_load(text)
        if fmt == "json":
            return json.loads(text)
    except yaml.YAMLError as exc:
        raise DefinitionError([ValidationIssue("", f"invalid YAML: {exc}")], source) from None
    except json.JSONDecodeError as exc:
        raise DefinitionError([ValidationIssue("", f"invalid JSON: {exc}")], source) from None
    except RecursionError:
        raise DefinitionError([ValidationIssue("", "document nested too deeply")], source) from None
    except ValueError as exc:
        # A scalar the parser cannot convert: `2024-02-30`, `!!int abc`, a 5,000-digit number.
        message = f"invalid {fmt.upper()}: {' '.join(str(exc).split())[:200]}"
        raise DefinitionError([ValidationIssue("", message)], source) from None
    raise DefinitionError([ValidationIssue("", f"unknown format {fmt!r} (yaml or json)")], source)


def load_definition_file(path: Path) -> list[WorkflowDefinition]:
    """Read and parse a definition file; the suffix (.yaml, .yml, .json) picks the format.

    Args:
        path: the file.

    Returns:
        The definitions it holds, in file order.

    Raises:
        DefinitionError: unsupported suffix, unreadable file, syntax error or invalid content.
    """
    fmt = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}.get(path.suffix.lower())
    if fmt is None:
        message = f"unsupported file type {path.suffix!r} (.yaml, .yml or .json)"
        raise DefinitionError([ValidationIssue("", message)], str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(
            [ValidationIssue("", f"cannot read file: {exc}")], str(path)
        ) from None
    return load_definitions(text, fmt, str(path))
