"""Change capture inside the database: any writer, one change row per change."""

from __future__ import annotations

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import EntityChange
from gov_pipeline.services import policies as svc

RAW_INSERT = """
INSERT INTO policies (tenant_id, title, policy_type, content, business_units, status, version,
                      version_number, tags, custom_fields, requires_acknowledgment,
                      created_at, updated_at)
VALUES ('acme', 'Raw', 'Security', '', '[]', 'draft', '1.0', 1, '["x"]', '{}', false,
        CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)
"""


def _changes(sessions: sessionmaker[Session]) -> list[EntityChange]:
    with sessions.begin() as session:
        return list(session.scalars(select(EntityChange).order_by(EntityChange.id)))


def test_a_raw_sql_writer_is_captured_like_our_service(
    engine: Engine, sessions: sessionmaker[Session], tenant: str
) -> None:
    # What someone typing into psql or sqlite3 does: no service, no context.
    with engine.begin() as conn:
        conn.exec_driver_sql(RAW_INSERT)
        pid = conn.execute(text("SELECT max(id) FROM policies")).scalar_one()
        conn.execute(text("UPDATE policies SET status = 'in_review' WHERE id = :id"), {"id": pid})
        conn.execute(text("UPDATE policies SET title = 'Raw 2' WHERE id = :id"), {"id": pid})
        conn.execute(
            text("UPDATE policies SET deleted_at = CURRENT_TIMESTAMP WHERE id = :id"), {"id": pid}
        )
        conn.execute(text("DELETE FROM policies WHERE id = :id"), {"id": pid})
    changes = _changes(sessions)
    assert [c.kind for c in changes] == [
        "created",
        "status_changed",
        "updated",
        "deleted",
        "deleted",
    ]
    assert {c.entity_id for c in changes} == {str(pid)}
    assert {c.tenant_id for c in changes} == {"acme"}
    assert all(c.actor is None for c in changes)
    created, moved, renamed = changes[:3]
    assert created.new_values is not None and created.new_values["tags"] == ["x"]
    assert created.new_values["requires_acknowledgment"] is False
    assert moved.changed_fields == ["status"]
    assert moved.old_values == {"status": "draft", "policy_type": "Security"}
    assert moved.new_values == {"status": "in_review", "policy_type": "Security"}
    assert renamed.changed_fields == ["title"]
    assert renamed.old_values is not None and renamed.old_values["title"] == "Raw"
    assert changes[3].changed_fields == ["deleted_at"]


def test_service_writes_carry_the_actor_and_execution(
    sessions: sessionmaker[Session], tenant: str, is_pg: bool
) -> None:
    with sessions.begin() as session:
        policy = svc.create_policy(
            session,
            tenant_id=tenant,
            fields={"title": "Access", "policy_type": "Security"},
            actor=svc.Actor("alice"),
        )
        pid = policy.id
    with sessions.begin() as session:
        svc.transition_status(
            session,
            tenant_id=tenant,
            policy_id=pid,
            to_status="in_review",
            actor=svc.Actor("system:engine", execution_id=77, chain_depth=2),
        )
    changes = _changes(sessions)
    assert [(c.kind, c.actor) for c in changes] == [
        ("created", "alice"),
        ("status_changed", "system:engine"),
    ]
    assert (changes[1].caused_by_execution_id, changes[1].chain_depth) == (77, 2)
    if is_pg:
        assert all(c.txid is not None and c.txid > 0 for c in changes)
        assert changes[0].txid != changes[1].txid


def test_context_does_not_leak_into_the_next_transaction(
    engine: Engine, sessions: sessionmaker[Session], tenant: str
) -> None:
    with sessions.begin() as session:
        pid = svc.create_policy(
            session, tenant_id=tenant, fields={"title": "A", "policy_type": "S"},
            actor=svc.Actor("alice"),
        ).id  # fmt: skip
    with engine.begin() as conn:
        conn.execute(text("UPDATE policies SET title = 'B' WHERE id = :id"), {"id": pid})
    assert [c.actor for c in _changes(sessions)] == ["alice", None]


def test_the_context_lasts_through_a_savepoint_of_its_transaction(
    sessions: sessionmaker[Session], tenant: str
) -> None:
    from gov_pipeline.db.capture import set_change_context

    with sessions.begin() as session:
        set_change_context(session, actor="alice")
        with session.begin_nested():
            session.execute(text(RAW_INSERT))
        session.execute(text("UPDATE policies SET title = 'After the savepoint'"))
    assert [(c.kind, c.actor) for c in _changes(sessions)] == [
        ("created", "alice"), ("updated", "alice"),
    ]  # fmt: skip


def test_an_update_that_changes_nothing_records_nothing(
    engine: Engine, sessions: sessionmaker[Session], tenant: str
) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(RAW_INSERT)
        conn.execute(text("UPDATE policies SET title = title"))
        conn.execute(text("UPDATE policies SET updated_at = CURRENT_TIMESTAMP"))
    assert [c.kind for c in _changes(sessions)] == ["created"]


def test_a_rolled_back_write_leaves_no_change(
    engine: Engine, sessions: sessionmaker[Session], tenant: str
) -> None:
    with engine.connect() as conn:
        trans = conn.begin()
        conn.exec_driver_sql(RAW_INSERT)
        trans.rollback()
    with sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(EntityChange)) == 0
