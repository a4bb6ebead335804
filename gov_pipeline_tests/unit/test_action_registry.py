"""The explicit registry of action plug-ins covers exactly the action types a definition admits."""

from __future__ import annotations

from typing import get_args

from gov_pipeline.domain.definitions import Action
from gov_pipeline.engine.actions.registry import HANDLERS, handler_for


def test_every_action_type_has_a_handler_and_no_handler_is_orphaned() -> None:
    models = get_args(get_args(Action)[0])
    assert set(HANDLERS) == {model.model_fields["type"].default for model in models}
    assert all(handler_for(name) is handler for name, handler in HANDLERS.items())
