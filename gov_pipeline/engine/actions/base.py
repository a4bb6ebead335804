"""What an action handler gets, and the registry mapping an action type to its handler.

Adding an action is one module: a pydantic model in `domain/definitions.py` and a function
here decorated with `@register("<type>")`. Handlers run inside the execution's transaction:
they write through the session and return a JSON-able result; raising rolls back the whole
execution (so a retry redoes every effect exactly once).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.orm import Session

from gov_pipeline.config import Settings
from gov_pipeline.db.models import ActionRun, EntityChange, Policy, WorkflowExecution
from gov_pipeline.services.workflows import LoadedWorkflow


@dataclass
class ActionContext:
    session: Session
    settings: Settings
    workflow: LoadedWorkflow
    execution: WorkflowExecution
    entity: Policy | None
    change: EntityChange | None
    action_run: ActionRun
    # The condition context (old/new/changed/entity/actor/trigger), for templates.
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return f"workflow:{self.workflow.name}"

    def render(self, template: str) -> str:
        """Fill `{entity.title}`-style placeholders from the facts; unknown ones stay as written."""

        def lookup(match: re.Match[str]) -> str:
            root, name = match.group(1), match.group(2)
            if root == "workflow":
                value: Any = {"name": self.workflow.name, "version": self.workflow.version}.get(
                    name
                )
            else:
                scope = self.facts.get(root)
                value = scope.get(name) if isinstance(scope, dict) else None
            return match.group(0) if value is None else str(value)

        return _PLACEHOLDER.sub(lookup, template)


_PLACEHOLDER = re.compile(r"\{(entity|new|old|workflow)\.([A-Za-z_][A-Za-z0-9_]{0,60})\}")

Handler = Callable[[ActionContext, Any], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}
M = TypeVar("M", bound=BaseModel)


def register(action_type: str) -> Callable[[Callable[[ActionContext, M], dict[str, Any]]], Handler]:
    """Register the handler of `action_type`."""

    def wrap(func: Callable[[ActionContext, M], dict[str, Any]]) -> Handler:
        HANDLERS[action_type] = func
        return func

    return wrap


def handler_for(action_type: str) -> Handler:
    # Importing the package registers every handler.
    import gov_pipeline.engine.actions  # noqa: F401

    return HANDLERS[action_type]
