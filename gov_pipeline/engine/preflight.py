"""Why a planned action would fail, found with the checks the action itself makes; reads only."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from gov_pipeline.config import Settings
from gov_pipeline.domain.definitions import (
    AssignAction,
    ChangeStatusAction,
    CreateTaskAction,
    NotifyAction,
    RequestApprovalAction,
    WebhookAction,
)
from gov_pipeline.domain.entities import kind_of
from gov_pipeline.domain.errors import IllegalTransitionError, InvalidInputError, NotFoundError
from gov_pipeline.domain.webhooks import check_url_allowed, no_signing_key, signing_key
from gov_pipeline.services.tenants import user_activity, users_with_roles


@dataclass
class Standing:
    """The entity as the next action finds it: an earlier `change_status` moved its status,
    an earlier `assign` to the owner changed its owner."""

    status: str
    owner: str | None


@dataclass(frozen=True)
class Preflight:
    """What the checks read: the caller's session, the settings of the process that would
    run the actions, and the environment a webhook's `secret_env` is looked up in."""

    session: Session
    settings: Settings
    tenant_id: str
    entity_type: str
    entity_label: str  # "policy 3", for messages
    # Deliveries read `secret_env` from their process's environment (runners/deliveries.py);
    # this process's is the one a dry run can see.
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)


def problems(check: Preflight, standing: Standing, action: Any) -> list[str]:
    """Why `action` would fail from `standing`, in the words of the action's own failure
    where it has one; moves `standing` on as the action would."""
    checker = _CHECKERS.get(action.type)
    return [] if checker is None else checker(check, standing, action)


def _change_status(check: Preflight, standing: Standing, action: ChangeStatusAction) -> list[str]:
    try:
        # What records.transition_record checks: a move to the status it has is illegal too.
        kind_of(check.entity_type).lifecycle.check(standing.status, action.to)
    except (IllegalTransitionError, InvalidInputError) as exc:
        return [str(exc)]
    standing.status = action.to
    return []


def _webhook(check: Preflight, _: Standing, action: WebhookAction) -> list[str]:
    found = []
    try:
        check_url_allowed(action.url, check.settings.webhook_allowed_hosts)  # as the action
    except InvalidInputError as exc:
        found.append(str(exc))
    key = signing_key(action.secret_env, check.settings.webhook_secret, check.environ)
    if not action.unsigned and not key:  # as each delivery attempt
        found.append(no_signing_key(action.secret_env))
    return found


def _notify(check: Preflight, standing: Standing, action: NotifyAction) -> list[str]:
    found = _user_problems(check, action.users) + _role_problems(check, action.roles)
    if action.include_owner:
        found += _owner_problems(check, standing)
    return found


def _assign(check: Preflight, standing: Standing, action: AssignAction) -> list[str]:
    if action.target == "owner":
        standing.owner = action.user  # the action sets it whoever it names
    return _user_problems(check, [action.user])


def _create_task(check: Preflight, standing: Standing, action: CreateTaskAction) -> list[str]:
    if action.assignee == "owner":
        return _owner_problems(check, standing)
    return _user_problems(check, [action.assignee] if action.assignee else [])


def _request_approval(check: Preflight, _: Standing, action: RequestApprovalAction) -> list[str]:
    found = []
    for index, step in enumerate(action.steps):
        label = repr(step.name) if step.name else str(index + 1)
        people = _user_problems(check, step.approvers.users)
        people += _role_problems(check, step.approvers.roles)
        found += [f"step {label}: {problem}" for problem in people]
    return found


def _user_problems(check: Preflight, user_ids: Iterable[str]) -> list[str]:
    wanted = list(dict.fromkeys(user_ids))
    active = user_activity(check.session, check.tenant_id, wanted)
    found = []
    for user in wanted:
        if user not in active:
            found.append(str(NotFoundError("user", user, check.tenant_id)))
        elif not active[user]:
            found.append(f"user {user!r} is inactive in tenant {check.tenant_id!r}")
    return found


def _role_problems(check: Preflight, roles: Iterable[str]) -> list[str]:
    # users_with_roles is how recipients and approvers are found (services/notifications.py).
    return [
        f"no active user of tenant {check.tenant_id!r} holds role {str(role)!r}"
        for role in dict.fromkeys(roles)
        if not users_with_roles(check.session, check.tenant_id, [role])
    ]


def _owner_problems(check: Preflight, standing: Standing) -> list[str]:
    if standing.owner is None:
        return [f"{check.entity_label} has no owner"]
    return [f"owner of {check.entity_label}: {p}" for p in _user_problems(check, [standing.owner])]


_CHECKERS: dict[str, Callable[[Preflight, Standing, Any], list[str]]] = {
    "assign": _assign,
    "change_status": _change_status,
    "create_task": _create_task,
    "notify": _notify,
    "request_approval": _request_approval,
    "webhook": _webhook,
}
