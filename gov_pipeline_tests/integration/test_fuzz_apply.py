"""Fuzzed definitions through the workflows service on both databases: a refused definition
writes nothing, an accepted one round-trips; code-like payloads run as data, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import Notification, Workflow, WorkflowVersion
from gov_pipeline.domain.definitions import parse_definition
from gov_pipeline.domain.errors import DefinitionError, NotFoundError
from gov_pipeline.services.executions import list_executions
from gov_pipeline.services.workflows import COMPILED, apply_definition, load_version
from gov_pipeline_tests.integration.engine_support import (
    apply_yaml,
    count,
    make_settings,
    new_policy,
    process,
)
from gov_pipeline_tests.unit.test_conditions import VALID_TREE
from gov_pipeline_tests.unit.test_fuzz_definitions import (
    ACTIONS,
    CONDITIONS,
    DEFINITIONS,
    NAMES,
    ODD_TEXT,
    VALID,
    VALID_ACTIONS,
    _payloads,
)

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")


# Mostly-valid definitions (so that many reach the database), beside the hostile ones.
def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(good, good, good, bad)


GOOD = st.builds(
    lambda name, tenant, conditions, actions, description: {
        **VALID,
        "name": name,
        "tenant_id": tenant,
        "conditions": conditions,
        "actions": actions,
        "description": description,
    },
    NAMES | st.sampled_from(["x" * 200, "\U0001f600" * 200]),
    st.sampled_from(["acme", "globex"]),
    VALID_TREE | st.none(),
    st.lists(VALID_ACTIONS, min_size=1, max_size=3),
    NAMES | st.just("\u202e" * 10_000),
)
# One field made bad, or none.
BAD = st.fixed_dictionaries({}) | st.one_of(
    st.fixed_dictionaries({"name": ODD_TEXT | st.just("x" * 201)}),
    st.fixed_dictionaries({"tenant_id": st.sampled_from(["ghost", "ACME", "acme "])}),
    st.fixed_dictionaries({"conditions": CONDITIONS}),
    st.fixed_dictionaries({"actions": st.lists(ACTIONS, max_size=3)}),
    st.fixed_dictionaries({"description": ODD_TEXT | st.just("\u202e" * 10_001)}),
)
NEAR_VALID = st.builds(lambda good, bad: {**good, **bad}, GOOD, BAD)


def _rows(sessions: sessionmaker[Session]) -> tuple[int, int]:
    return count(sessions, Workflow), count(sessions, WorkflowVersion)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    data=_mostly(NEAR_VALID, DEFINITIONS),
    # Applied where GOV_PIPELINE_WEBHOOK_SECRET is set, mostly; else a webhook without
    # secret_env or unsigned: true is refused.
    secret=st.sampled_from(["fuzz-secret", "fuzz-secret", None]),
)
def test_a_refused_definition_writes_nothing_and_an_accepted_one_round_trips(
    sessions: sessionmaker[Session], tenant: str, data: object, secret: str | None
) -> None:
    COMPILED.clear()  # ids restart in every test database; the cache is per process
    before = _rows(sessions)
    try:
        with sessions.begin() as session:
            definition = parse_definition(data)
            result = apply_definition(session, definition, actor="fuzz", webhook_secret=secret)
            key = (result.workflow.id, result.version, result.outcome)
    except DefinitionError as exc:
        event("refused by validation" if exc.source is None else "refused: no signing secret")
        assert exc.issues
        assert exc.source is None or secret is None  # a secret here: every webhook may apply
        assert _rows(sessions) == before
        return
    except NotFoundError as exc:
        event("refused: unknown tenant")
        assert "tenant" in str(exc)
        assert _rows(sessions) == before
        return
    workflow_id, version, outcome = key
    event(f"stored: {outcome}")
    grew = {"created": (1, 1), "new_version": (0, 1), "unchanged": (0, 0)}[outcome]
    assert _rows(sessions) == (before[0] + grew[0], before[1] + grew[1])
    with sessions.begin() as session:
        workflow = session.get(Workflow, workflow_id)
        assert workflow is not None
        stored = load_version(session, workflow, version)
    assert stored.definition.fingerprint() == parse_definition(data).fingerprint()
    assert stored.condition.evaluate({"new": {"status": "in_review"}}) in (True, False)


def test_a_definition_the_database_refuses_leaves_no_partial_write(
    sessions: sessionmaker[Session], tenant: str
) -> None:
    """The workflow row is flushed before its version: a failure after it rolls both back."""
    apply_yaml(sessions, "{}", **VALID)
    before = _rows(sessions)
    definition = parse_definition({**VALID, "description": "v2"})
    with pytest.raises(RuntimeError, match="after the workflow row"), sessions.begin() as session:
        apply_definition(session, definition)
        raise RuntimeError("after the workflow row")
    assert _rows(sessions) == before
    with sessions.begin() as session:
        workflow = session.scalars(select(Workflow)).one()
        assert (workflow.current_version, workflow.description) == (1, "")


def test_a_version_stored_before_the_field_check_still_loads(
    sessions: sessionmaker[Session], tenant: str
) -> None:
    """A version applied before condition fields were checked may hold a typo: the engine
    must keep loading it (as it did, it never matches) rather than fail on every change."""
    apply_yaml(sessions, "{}", **VALID)
    typo = {"field": "new.staus", "op": "changed_to", "value": "in_review"}
    with sessions.begin() as session:
        version = session.scalars(select(WorkflowVersion)).one()
        version.definition = {**version.definition, "conditions": typo}
    with pytest.raises(DefinitionError, match="unknown field 'staus'"):
        parse_definition({**VALID, "conditions": typo})
    COMPILED.clear()
    with sessions.begin() as session:
        loaded = load_version(session, session.scalars(select(Workflow)).one())
    assert loaded.definition.conditions == typo
    assert loaded.condition.evaluate({"new": {"status": "in_review"}, "changed": []}) is False


def test_code_like_payloads_are_data_end_to_end(
    sessions: sessionmaker[Session], tenant: str, db_url: str, tmp_path: Path
) -> None:
    sentinel = tmp_path / "pwned"
    payloads = _payloads(sentinel)
    settings_ = make_settings(db_url)
    definition: dict[str, Any] = {
        **VALID,
        "name": "payloads",
        "trigger": "on_create",
        "description": payloads[0],
        "conditions": {"field": "new.title", "op": "in", "value": payloads},
        "actions": [
            {
                "type": "notify",
                "users": ["u1"],
                "title": "{entity.title} " + payloads[2][:150],
                "message": payloads[3],
            }
        ],
    }
    with sessions.begin() as session:
        apply_definition(session, parse_definition(definition))
    hit = new_policy(sessions, title=payloads[1])
    miss = new_policy(sessions, title="7", content=payloads[4])
    process(sessions, settings_)
    with sessions.begin() as session:
        executions = {e["entity_id"]: e["status"] for e in list_executions(session, "acme")}
        (note,) = session.scalars(select(Notification)).all()
        assert (note.title, note.message) == (
            f"{payloads[1]} {payloads[2][:150]}"[:500],
            payloads[3],
        )
    assert executions == {str(hit): "completed", str(miss): "skipped"}
    assert not sentinel.exists()
