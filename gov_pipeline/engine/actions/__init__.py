"""Action handlers, one module per action type; importing the package registers them all."""

from gov_pipeline.engine.actions import (  # noqa: F401
    assign,
    change_status,
    create_task,
    notify,
    request_approval,
    webhook,
)
from gov_pipeline.engine.actions.base import HANDLERS, ActionContext, handler_for, register

__all__ = ["HANDLERS", "ActionContext", "handler_for", "register"]
