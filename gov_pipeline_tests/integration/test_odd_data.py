"""Oversized and odd data on both databases: a 1 MB policy and odd Unicode survive create,
read and update, and the captured change rows hold them exactly; what a database cannot
store (NUL, lone surrogates) is refused with InvalidInputError before anything is written.
Changes for an unknown entity or tenant are recorded as skipped, or only marked processed."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import (
    ChangeSkip,
    EntityChange,
    Notification,
    Policy,
    ProcessedChange,
    WorkflowExecution,
)
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.services import policies
from gov_pipeline.services.executions import list_executions
from gov_pipeline_tests.integration.engine_support import (
    apply_yaml,
    count,
    make_settings,
    new_policy,
    process,
)

RTL = "\u202eevil\u202c \u200f\u05e9\u05dc\u05d5\u05dd\u200e \u0645\u0631\u062d\u0628\u0627"
EMOJI = "\U0001f600\U0001f3f3\ufe0f\u200d\U0001f308 \U0001f469\u200d\U0001f4bb"
COMBINING = "e\u0301\u0308\u20dd Z\u0351\u0352\u0353\u0354 \ufeff\u2028\u2029"
ODD = f"{RTL} {EMOJI} {COMBINING} \x01\x1b\x7f \ufffd \U0010fffd"
MEGABYTE = ("Policy text " + ODD + "\n") * (1_000_000 // len("Policy text " + ODD + "\n") + 1)


def _policy(sessions: sessionmaker[Session], pid: int) -> Policy:
    with sessions.begin() as session:
        return policies.get_policy(session, tenant_id="acme", policy_id=pid)


def _changes(sessions: sessionmaker[Session], pid: int) -> list[EntityChange]:
    with sessions.begin() as session:
        return list(
            session.scalars(
                select(EntityChange)
                .where(EntityChange.entity_id == str(pid))
                .order_by(EntityChange.id)
            )
        )


def test_a_megabyte_of_odd_unicode_round_trips_and_is_captured_exactly(
    sessions: sessionmaker[Session], tenant: str
) -> None:
    assert len(MEGABYTE) >= 1_000_000
    fields: dict[str, Any] = {
        "title": ODD[:500],
        "policy_type": EMOJI,
        "content": MEGABYTE,
        "purpose": COMBINING,
        "tags": [RTL, EMOJI, COMBINING],
        "custom_fields": {RTL: EMOJI, "nested": {"k\u0301": [ODD, 1, None, True]}},
        "owner_id": "o\u0301wner",
    }
    pid = new_policy(sessions, **fields)
    stored = _policy(sessions, pid)
    for name, value in fields.items():
        assert getattr(stored, name) == value, name

    (created,) = _changes(sessions, pid)
    assert created.kind == "created"
    assert created.new_values is not None
    for name, value in fields.items():
        assert created.new_values[name] == value, name

    updated_content = MEGABYTE[::-1]  # reversed: combining marks now precede their base
    with sessions.begin() as session:
        policies.update_policy(
            session,
            tenant_id="acme",
            policy_id=pid,
            fields={"content": updated_content, "tags": [ODD]},
            actor=policies.Actor("\u202ealice"),
        )
    assert _policy(sessions, pid).content == updated_content
    _, update = _changes(sessions, pid)
    assert update.kind == "updated" and update.actor == "\u202ealice"
    assert set(update.changed_fields) >= {"content", "tags"}
    assert update.old_values is not None and update.new_values is not None
    assert (update.old_values["content"], update.new_values["content"]) == (
        MEGABYTE,
        updated_content,
    )
    assert update.new_values["tags"] == [ODD]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"content": "before\x00after"}, "content"),
        ({"title": "\x00"}, "title"),
        ({"tags": ["ok", "n\x00"]}, "tags"),
        ({"custom_fields": {"k\x00": "v"}}, "custom_fields"),
        ({"custom_fields": {"k": {"deep": ["\x00"]}}}, "custom_fields"),
        ({"content": "lone \ud800 surrogate"}, "content"),
        ({"custom_fields": {"k": "\udfff"}}, "custom_fields"),
        ({"title": "t" * 501}, "title"),
    ],
)
def test_what_a_database_cannot_store_is_refused_by_name_and_nothing_is_written(
    sessions: sessionmaker[Session], tenant: str, fields: dict[str, Any], field: str
) -> None:
    pid = new_policy(sessions)
    before = (count(sessions, Policy), count(sessions, EntityChange))
    with pytest.raises(InvalidInputError) as created:
        new_policy(sessions, **fields)
    assert created.value.field.split(".")[0] == field
    with pytest.raises(InvalidInputError) as updated, sessions.begin() as session:
        policies.update_policy(session, tenant_id="acme", policy_id=pid, fields=fields)
    assert updated.value.field.split(".")[0] == field
    assert (count(sessions, Policy), count(sessions, EntityChange)) == before
    assert _policy(sessions, pid).title == "Access control"


UNKNOWN_ENTITY_WORKFLOW = """
name: any update
tenant_id: acme
type: notification
trigger: on_update
actions: [{type: notify, users: [u1], title: "Updated {entity.title}"}]
"""


def _insert_change(engine: Any, tenant_id: str, entity_id: str) -> int:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO entity_changes (tenant_id, entity_type, entity_id, kind, old_values,"
                " new_values, changed_fields, chain_depth) VALUES (:t, 'policy', :e, 'updated',"
                " '{}', '{\"title\": \"x\"}', '[\"title\"]', 0)"
            ),
            {"t": tenant_id, "e": entity_id},
        )
        return int(conn.execute(text("SELECT max(id) FROM entity_changes")).scalar_one())


@pytest.mark.parametrize("entity_id", ["999999", "not-a-number", "-1", "\u202e1"])
def test_a_change_for_an_unknown_entity_is_skipped_with_the_reason(
    sessions: sessionmaker[Session], tenant: str, db_url: str, engine: Any, entity_id: str
) -> None:
    settings = make_settings(db_url)
    apply_yaml(sessions, UNKNOWN_ENTITY_WORKFLOW)
    change_id = _insert_change(engine, "acme", entity_id)
    process(sessions, settings)
    with sessions.begin() as session:
        assert session.scalars(select(WorkflowExecution)).all() == []
        (skip,) = list_executions(session, "acme")
        assert (skip["change_id"], skip["status"], skip["entity_id"]) == (
            change_id,
            "skipped",
            entity_id,
        )
        assert skip["status_reason"] == f"policy {entity_id} not found in tenant acme"
        assert session.get(ProcessedChange, change_id) is not None
    assert count(sessions, Notification) == 0


def test_a_change_of_another_tenants_entity_is_not_run_on_it(
    sessions: sessionmaker[Session], tenant: str, db_url: str, engine: Any
) -> None:
    """A change row naming acme but an entity id of globex's policy: the entity is looked up
    within acme only, so the workflow is skipped and globex's policy is not touched."""
    settings = make_settings(db_url)
    apply_yaml(sessions, UNKNOWN_ENTITY_WORKFLOW)
    theirs = new_policy(sessions, tenant="globex", title="Globex secret")
    process(sessions, settings)
    change_id = _insert_change(engine, "acme", str(theirs))
    process(sessions, settings)
    with sessions.begin() as session:
        assert session.scalars(select(WorkflowExecution)).all() == []
        (skip,) = session.scalars(select(ChangeSkip)).all()
        assert skip.change_id == change_id and skip.tenant_id == "acme"
        assert "not found in tenant acme" in skip.workflows[0]["reason"]
        assert "Globex secret" not in str(skip.workflows)
    assert count(sessions, Notification) == 0


def test_a_change_for_an_unknown_tenant_is_only_marked_processed(
    sessions: sessionmaker[Session], tenant: str, db_url: str, engine: Any
) -> None:
    settings = make_settings(db_url)
    apply_yaml(sessions, UNKNOWN_ENTITY_WORKFLOW)
    pid = new_policy(sessions)
    process(sessions, settings)
    tables = ("workflow_executions", "action_runs", "notifications", "tasks", "approvals",
              "webhook_deliveries", "policies", "workflows", "tenants")  # fmt: skip

    def counts() -> dict[str, int]:
        with engine.begin() as conn:
            return {
                t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in tables
            }

    before = counts()
    change_ids = [_insert_change(engine, "ghost", str(pid)), _insert_change(engine, "ghost", "1")]
    process(sessions, settings)
    assert counts() == before
    with sessions.begin() as session:
        for change_id in change_ids:
            marked = session.get(ProcessedChange, change_id)
            assert marked is not None and marked.tenant_id == "ghost"
    process(sessions, settings)  # read again: still nothing else
    assert counts() == before


@pytest.mark.parametrize(
    ("decision", "field"),
    [
        ({"comment": "ok\x00"}, "comment"),
        ({"comment": "\udfff"}, "comment"),
        ({"signature": {"type": "typed", "data": "Carol\x00"}}, "signature"),
        ({"signature": {"type": "typed", "data": "C", "metadata": {"k": "\ud800"}}}, "signature"),
    ],
)
def test_a_decision_that_cannot_be_stored_is_refused_and_the_step_stays_open(
    sessions: sessionmaker[Session], tenant: str, db_url: str, decision: dict[str, Any], field: str
) -> None:
    from gov_pipeline.db.models import Approval
    from gov_pipeline.services import approvals
    from gov_pipeline_tests.integration.engine_support import start_example_approval

    start_example_approval(sessions, make_settings(db_url))
    with sessions.begin() as session:
        step = session.scalars(select(Approval).order_by(Approval.step_index)).first()
        assert step is not None
    changes = count(sessions, EntityChange)
    with pytest.raises(InvalidInputError) as err, sessions.begin() as session:
        approvals.decide(
            session, tenant_id="acme", approval_id=step.id, user_id="carol",
            decision="approve", **decision,
        )  # fmt: skip
    assert err.value.field == field
    assert count(sessions, EntityChange) == changes
    with sessions.begin() as session:
        assert session.get(Approval, step.id).status == "pending"  # type: ignore[union-attr]
    with sessions.begin() as session:  # the same decision, storable, goes through
        approvals.decide(
            session, tenant_id="acme", approval_id=step.id, user_id="carol",
            decision="approve", comment="ok \u202e\U0001f600",
        )  # fmt: skip


@pytest.mark.parametrize("name", ["a\x00b", "\ud800", "n" * 201])
def test_tenant_and_user_names_that_cannot_be_stored_are_refused(
    sessions: sessionmaker[Session], name: str
) -> None:
    from gov_pipeline.db.models import Tenant, User
    from gov_pipeline.services import tenants

    with pytest.raises(InvalidInputError, match="name"), sessions.begin() as session:
        tenants.create_tenant(session, tenant_id="t1", name=name)
    with sessions.begin() as session:
        tenants.create_tenant(session, tenant_id="t1", name="\u202eT1 \U0001f600")
    with pytest.raises(InvalidInputError, match="name"), sessions.begin() as session:
        tenants.upsert_user(session, tenant_id="t1", user_id="u1", name=name)
    with pytest.raises(InvalidInputError, match="email"), sessions.begin() as session:
        email = "e" * 321 if len(name) > 200 else name  # the column holds 320
        tenants.upsert_user(session, tenant_id="t1", user_id="u1", email=email)
    assert (count(sessions, Tenant), count(sessions, User)) == (1, 0)
