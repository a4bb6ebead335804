"""Which handler runs each action type: the one list of the action plug-ins."""

from __future__ import annotations

from gov_pipeline.engine.actions.assign import assign
from gov_pipeline.engine.actions.base import Handler
from gov_pipeline.engine.actions.change_status import change_status
from gov_pipeline.engine.actions.create_task import create_task
from gov_pipeline.engine.actions.notify import notify
from gov_pipeline.engine.actions.request_approval import request_approval
from gov_pipeline.engine.actions.webhook import webhook

# Keyed by the `type` of the action's model in domain/definitions.py.
HANDLERS: dict[str, Handler] = {
    "assign": assign,
    "change_status": change_status,
    "create_task": create_task,
    "notify": notify,
    "request_approval": request_approval,
    "webhook": webhook,
}


def handler_for(action_type: str) -> Handler:
    """The handler of `action_type`.

    Raises:
        KeyError: no plug-in handles it (the definition schema admits only the types above).
    """
    return HANDLERS[action_type]
