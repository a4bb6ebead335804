"""What an action handler gets (ActionContext) and what it is (Handler).

Adding an action: a pydantic model in `domain/definitions.py`, a module in this folder with
its handler function (`(ctx: ActionContext, action: <the model>) -> dict`), and one line in
`registry.py` mapping the model's `type` to it. Handlers run inside the execution's
transaction: they write through the session and return a JSON-able result; raising rolls
back the whole execution (so a retry redoes every effect exactly once).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from gov_pipeline.config import Settings
from gov_pipeline.db.models import ActionRun, EntityChange, Record, WorkflowExecution
from gov_pipeline.services.records import Actor
from gov_pipeline.services.workflows import LoadedWorkflow


@dataclass
class ActionContext:
    session: Session
    settings: Settings
    workflow: LoadedWorkflow
    execution: WorkflowExecution
    entity: Record | None
    change: EntityChange | None
    action_run: ActionRun
    # The condition context (old/new/changed/entity/actor/trigger), for templates.
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return f"workflow:{self.workflow.name}"

    def writer(self) -> Actor:
        """Who an action's write is made by: this execution, one more level of chaining
        (the resulting change records both)."""
        return Actor(self.actor, self.execution.id, self.execution.chain_depth + 1)

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
