"""What the database itself refuses, whoever writes: statuses outside the lifecycle and
illegal moves (raw SQL, on both databases), new rows in another status than the initial one,
and the override an administrator may take, captured with its reason. Also: a raw writer's
minimal INSERT, `updated_at` kept by the database, and a decision change that names another
tenant's execution."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.capture import set_change_context
from gov_pipeline.db.models import (
    Approval,
    EntityChange,
    Notification,
    Policy,
    ProcessedChange,
    WorkflowExecution,
)
from gov_pipeline.domain.errors import InvalidInputError
from gov_pipeline.domain.lifecycle import POLICY_LIFECYCLE
from gov_pipeline.services import policies as svc
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import (
    count,
    make_settings,
    process,
    start_example_approval,
)

MINIMAL_INSERT = (
    "INSERT INTO policies (tenant_id, title, policy_type) VALUES (:t, :title, 'Security')"
)


def _raw_policy(engine: Engine, tenant: str = "acme", title: str = "Raw") -> int:
    with engine.begin() as conn:
        conn.execute(text(MINIMAL_INSERT), {"t": tenant, "title": title})
        return int(conn.execute(text("SELECT max(id) FROM policies")).scalar_one())


def _status(engine: Engine, pid: int) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(text("SELECT status FROM policies WHERE id = :i"), {"i": pid}).scalar_one()
        )


def _set_status(engine: Engine, pid: int, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE policies SET status = :s WHERE id = :i"), {"s": status, "i": pid})


@contextmanager
def _override(engine: Engine, reason: str, actor: str) -> Iterator[Connection]:
    """An administrator's data-repair transaction: the lifecycle is not enforced in it."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(
                text(
                    "SELECT set_config('gov.lifecycle_override', :r, true),"
                    " set_config('gov.actor', :a, true)"
                ),
                {"r": reason, "a": actor},
            )
        else:
            conn.execute(
                text(
                    "INSERT INTO capture_context (id, actor, chain_depth, importing, "
                    "lifecycle_override) VALUES (1, :a, 0, 0, :r)"
                ),
                {"r": reason, "a": actor},
            )
        yield conn
        if conn.dialect.name != "postgresql":
            conn.execute(text("DELETE FROM capture_context"))


def test_the_minimal_insert_works_and_is_captured(
    engine: Engine, sessions: sessionmaker[Session], tenant: str
) -> None:
    pid = _raw_policy(engine)
    with sessions.begin() as session:
        policy = session.get(Policy, pid)
        assert policy is not None
        assert (policy.status, policy.content, policy.version, policy.version_number) == (
            "draft", "", "1.0", 1,
        )  # fmt: skip
        assert (policy.tags, policy.business_units, policy.custom_fields) == ([], [], {})
        assert policy.requires_acknowledgment is False
        change = session.scalars(select(EntityChange)).one()
    assert (change.kind, change.entity_id, change.tenant_id) == ("created", str(pid), "acme")


def test_a_raw_update_moves_updated_at(engine: Engine, tenant: str) -> None:
    pid = _raw_policy(engine)
    with engine.begin() as conn:
        # An hour back, as the writer set it: the database keeps what a writer sets.
        conn.execute(
            text("UPDATE policies SET updated_at = :t WHERE id = :i"),
            {"t": "2020-01-01 00:00:00", "i": pid},
        )
    read = "SELECT updated_at FROM policies WHERE id = :i"
    with engine.connect() as conn:
        before = str(conn.execute(text(read), {"i": pid}).scalar_one())
    assert before.startswith("2020-01-01")
    with engine.begin() as conn:
        conn.execute(text("UPDATE policies SET title = 'Renamed' WHERE id = :i"), {"i": pid})
    with engine.connect() as conn:
        after = str(conn.execute(text(read), {"i": pid}).scalar_one())
    assert not after.startswith("2020-01-01") and after > before


@pytest.mark.parametrize(
    ("moves", "refused", "message"),
    [
        (["bogus"], "bogus", "not a policy status|unknown policy status 'bogus'"),
        (["published"], "published", "illegal status transition: draft -> published"),
        (
            ["in_review", "approved", "draft"],
            "draft",
            "illegal status transition: approved -> draft",
        ),
        (["archived", "draft"], "draft", "illegal status transition: archived -> draft"),
    ],
)
def test_raw_sql_cannot_write_a_status_the_lifecycle_forbids(
    engine: Engine, tenant: str, moves: list[str], refused: str, message: str
) -> None:
    pid = _raw_policy(engine)
    *allowed, last = moves
    for status in allowed:
        _set_status(engine, pid, status)
    before = _status(engine, pid)
    with pytest.raises(DBAPIError, match=message):
        _set_status(engine, pid, last)
    assert _status(engine, pid) == before
    # The policy is not stuck: every legal move from where it stands still works.
    for target in sorted(POLICY_LIFECYCLE.transitions[before]):
        assert POLICY_LIFECYCLE.allows(before, target)


def test_a_raw_insert_starts_as_draft_unless_imported(
    engine: Engine, sessions: sessionmaker[Session], tenant: str
) -> None:
    with (
        pytest.raises(DBAPIError, match="a new policy starts as draft, not published"),
        engine.begin() as conn,
    ):
        conn.execute(
            text(
                "INSERT INTO policies (tenant_id, title, policy_type, status) "
                "VALUES ('acme', 'Early', 'Security', 'published')"
            )
        )
    assert count(sessions, Policy) == 0
    # Our import says so for its transaction, and may load policies as they are.
    with sessions.begin() as session:
        imported = svc.create_policy(
            session, tenant_id="acme", importing=True,
            fields={"title": "Legacy", "policy_type": "Security", "status": "published"},
        )  # fmt: skip
    assert imported.status == "published"
    # The next transaction is not an import any more.
    with pytest.raises(DBAPIError, match="starts as draft"), sessions.begin() as session:
        set_change_context(session, actor="x")
        session.execute(
            text(
                "INSERT INTO policies (tenant_id, title, policy_type, status) "
                "VALUES ('acme', 'Later', 'Security', 'approved')"
            )
        )


def test_the_service_refuses_a_new_policy_in_another_status(
    sessions: sessionmaker[Session], tenant: str
) -> None:
    with (
        pytest.raises(InvalidInputError, match="a new policy starts as draft, not published"),
        sessions.begin() as session,
    ):
        svc.create_policy(
            session, tenant_id="acme",
            fields={"title": "X", "policy_type": "Security", "status": "published"},
        )  # fmt: skip
    assert count(sessions, Policy) == 0


def test_an_override_is_explicit_per_transaction_and_captured(
    engine: Engine, sessions: sessionmaker[Session], tenant: str
) -> None:
    pid = _raw_policy(engine)
    with _override(engine, "restore the status lost in ticket 42", "dba-alice") as conn:
        conn.execute(text("UPDATE policies SET status = 'published' WHERE id = :i"), {"i": pid})
    assert _status(engine, pid) == "published"
    with sessions.begin() as session:
        moved = session.scalars(
            select(EntityChange).where(EntityChange.kind == "status_changed")
        ).one()
    assert moved.lifecycle_override == "restore the status lost in ticket 42"
    assert moved.actor == "dba-alice"
    # Outside that transaction the lifecycle holds again; an override never allows a value
    # outside the lifecycle.
    with pytest.raises(DBAPIError, match="illegal status transition: published -> draft"):
        _set_status(engine, pid, "draft")
    with (
        pytest.raises(DBAPIError, match="policy status"),
        _override(engine, "oops", "dba-alice") as conn,
    ):
        conn.execute(text("UPDATE policies SET status = 'bogus' WHERE id = :i"), {"i": pid})
    assert _status(engine, pid) == "published"


STATUSES = st.sampled_from([*POLICY_LIFECYCLE.statuses, "bogus", "", "Draft", "in review"])


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(start=st.sampled_from(POLICY_LIFECYCLE.statuses), moves=st.lists(STATUSES, max_size=6))
def test_fuzz_raw_status_writes_only_ever_store_allowed_moves(
    engine: Engine, tenant: str, start: str, moves: list[str]
) -> None:
    """Whatever raw SQL tries, the stored status is always the previous one or a status the
    lifecycle allows from it."""
    pid = _fuzz_policy(engine)
    with _override(engine, "fuzz: reset", "fuzz") as conn:
        conn.execute(text("UPDATE policies SET status = :s WHERE id = :i"), {"s": start, "i": pid})
    previous = start
    for target in moves:
        with suppress(DBAPIError):
            _set_status(engine, pid, target)
        stored = _status(engine, pid)
        assert stored == previous or POLICY_LIFECYCLE.allows(previous, stored), (
            previous, target, stored,
        )  # fmt: skip
        assert stored == (target if POLICY_LIFECYCLE.allows(previous, target) else previous)
        previous = stored


_FUZZ_POLICY: dict[str, int] = {}


def _fuzz_policy(engine: Engine) -> int:
    key = str(engine.url)
    if key not in _FUZZ_POLICY or not _exists(engine, _FUZZ_POLICY[key]):
        _FUZZ_POLICY[key] = _raw_policy(engine, title="Fuzzed")
    return _FUZZ_POLICY[key]


def _exists(engine: Engine, pid: int) -> bool:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT count(*) FROM policies WHERE id = :i"), {"i": pid})
        return bool(found.scalar_one())


# -- a decision of one tenant must not continue another tenant's execution ------------------


def _forge_decision(engine: Engine, tenant: str, approval: Approval, **values: Any) -> None:
    """What a raw writer could put in the change table: an approval_decided change of
    `tenant` naming `approval`'s execution."""
    new_values = {
        "approval_id": approval.id, "execution_id": approval.execution_id,
        "step_index": approval.step_index, "approval_status": "approved",
        "decision": "approve", "decided_by": "ciso", **values,
    }  # fmt: skip
    import json

    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO entity_changes (tenant_id, entity_type, entity_id, kind, "
                "old_values, new_values, changed_fields, actor, chain_depth) VALUES "
                "(:t, 'policy', :e, 'approval_decided', :old, :new, :changed, 'mallory', 0)"
            ),
            {
                "t": tenant, "e": approval.entity_id, "old": '{"approval_status": "pending"}',
                "new": json.dumps(new_values), "changed": '["approval_status"]',
            },
        )  # fmt: skip


@pytest.mark.parametrize(
    ("forged_tenant", "values", "reason"),
    [
        ("globex", {}, "execution {execution} not found in tenant 'globex'"),
        ("acme", {"decided_by": "mallory"}, "was not decided by 'mallory'"),
        ("acme", {"approval_id": 999_999}, "approval 999999 not found in tenant 'acme'"),
    ],
)
def test_a_forged_decision_is_refused_with_its_reason_and_changes_nothing(
    engine: Engine,
    sessions: sessionmaker[Session],
    tenant: str,
    db_url: str,
    forged_tenant: str,
    values: dict[str, Any],
    reason: str,
) -> None:
    settings_ = make_settings(db_url)
    with sessions.begin() as session:
        upsert_user(session, tenant_id="globex", user_id="ciso", roles=["admin"])
        upsert_user(session, tenant_id="acme", user_id="mallory", roles=["viewer"])
    start_example_approval(sessions, settings_)
    with sessions.begin() as session:
        first = session.scalars(select(Approval).order_by(Approval.step_index)).first()
        assert first is not None
        session.expunge(first)
        before = (
            session.scalar(select(WorkflowExecution.status).where(
                WorkflowExecution.id == first.execution_id)),
            [a.status for a in session.scalars(select(Approval).order_by(Approval.id))],
        )  # fmt: skip
    notices = count(sessions, Notification)
    _forge_decision(engine, forged_tenant, first, **values)
    process(sessions, settings_)
    with sessions.begin() as session:
        forged = session.scalars(
            select(EntityChange).where(EntityChange.kind == "approval_decided")
        ).one()
        marker = session.get(ProcessedChange, forged.id)
        after = (
            session.scalar(select(WorkflowExecution.status).where(
                WorkflowExecution.id == first.execution_id)),
            [a.status for a in session.scalars(select(Approval).order_by(Approval.id))],
        )  # fmt: skip
    assert before == after == ("awaiting_approval", ["pending", "waiting"])
    assert count(sessions, Notification) == notices
    assert marker is not None and marker.outcome == "refused"
    assert marker.note is not None
    assert reason.format(execution=first.execution_id) in marker.note
