"""Row-level security on PostgreSQL: the second wall behind the application's filters.

Another application connects with a login role of its own, a member of `gov_writer`,
granted one tenant in `gov_tenant_grants` (docs/operations.md, "Row-level security"). Even
with raw SQL, and even when it names another tenant in `gov.tenant_id`, it reads, updates
and deletes nothing of that tenant; it cannot write change rows; its writes are captured.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.engine import make_engine, make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS, APP_ROLE, RESERVED_SETTINGS
from gov_pipeline_tests.conftest import _truncate_all
from gov_pipeline_tests.integration.engine_support import another_application, new_policy

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(postgres_url: str) -> Iterator[str]:
    _truncate_all(postgres_url)
    yield postgres_url


@pytest.fixture
def app_sessions(pg: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(pg, role=APP_ROLE)
    sessions = make_sessionmaker(engine, tenant=ALL_TENANTS)
    from gov_pipeline.services.tenants import create_tenant

    with sessions.begin() as session:
        create_tenant(session, tenant_id="acme")
        create_tenant(session, tenant_id="globex")
    yield sessions
    engine.dispose()


@pytest.fixture
def acme_app(pg: str, app_sessions: sessionmaker[Session]) -> Iterator[Engine]:
    """A login role of another application, granted tenant acme only, as an operator
    would set it up (docs/operations.md)."""
    with another_application(pg) as engine:
        yield engine


def _as(conn: Connection, tenant: str) -> None:
    conn.execute(text("SELECT set_config('gov.tenant_id', :t, true)"), {"t": tenant})


def _titles(conn: Connection) -> list[str]:
    return sorted(str(t) for t in conn.execute(text("SELECT title FROM policies")).scalars())


def test_another_application_sees_and_writes_only_its_granted_tenant(
    app_sessions: sessionmaker[Session], acme_app: Engine
) -> None:
    acme = new_policy(app_sessions, "acme", title="Acme policy")
    globex = new_policy(app_sessions, "globex", title="Globex policy")
    with acme_app.begin() as conn:
        assert _titles(conn) == []  # no tenant declared: nothing
        _as(conn, "acme")
        assert _titles(conn) == ["Acme policy"]
        updated = conn.execute(text("UPDATE policies SET title = 'x' WHERE id = :i"), {"i": globex})
        deleted = conn.execute(text("DELETE FROM policies WHERE id = :i"), {"i": globex})
        assert (updated.rowcount, deleted.rowcount) == (0, 0)
        moved = conn.execute(
            text("UPDATE policies SET status = 'in_review' WHERE id = :i"), {"i": acme}
        )
        assert moved.rowcount == 1
    for other in ("globex", ALL_TENANTS):  # naming a tenant it was not granted: nothing
        with acme_app.begin() as conn:
            _as(conn, other)
            assert _titles(conn) == []
            assert conn.execute(text("SELECT count(*) FROM entity_changes")).scalar_one() == 0
    with pytest.raises(DBAPIError, match="row-level security"), acme_app.begin() as conn:
        _as(conn, "acme")
        conn.execute(
            text(
                "INSERT INTO policies (tenant_id, title, policy_type) "
                "VALUES ('globex', 'Planted', 'Security')"
            )
        )
    with app_sessions.begin() as session:
        rows = session.execute(
            text("SELECT tenant_id, title, status FROM policies ORDER BY id")
        ).all()
        captured = session.execute(
            text("SELECT tenant_id, kind FROM entity_changes ORDER BY id")
        ).all()
    assert [tuple(r) for r in rows] == [
        ("acme", "Acme policy", "in_review"),
        ("globex", "Globex policy", "draft"),
    ]
    # Its write was captured (the capture runs as the table owner).
    assert [tuple(c) for c in captured][-1] == ("acme", "status_changed")


def test_another_application_cannot_forge_changes_or_touch_engine_tables(
    app_sessions: sessionmaker[Session], acme_app: Engine
) -> None:
    new_policy(app_sessions, "acme")
    for statement in (
        "INSERT INTO entity_changes (tenant_id, entity_type, entity_id, kind, changed_fields, "
        "chain_depth) VALUES ('acme', 'policy', '1', 'approval_decided', '[]', 0)",
        "UPDATE workflow_executions SET status = 'completed'",
        "DELETE FROM processed_changes",
    ):
        with pytest.raises(DBAPIError, match="permission denied"), acme_app.begin() as conn:
            _as(conn, "acme")
            conn.execute(text(statement))


@pytest.mark.parametrize("setting", RESERVED_SETTINGS)
def test_another_application_cannot_give_the_settings_of_this_projects_processes(
    app_sessions: sessionmaker[Session], acme_app: Engine, setting: str
) -> None:
    """An override of the lifecycle, an import's statuses, the execution a write belongs to:
    only `gov_app` gives them; another writer that tries is refused, and nothing is written."""
    acme = new_policy(app_sessions, "acme", title="Acme policy")
    value = "on" if setting == "gov.importing" else "1"
    for statement in (
        "UPDATE policies SET status = 'published' WHERE id = :i",
        "UPDATE policies SET title = 'renamed' WHERE id = :i",
        "INSERT INTO approval_decisions (tenant_id, approval_id, decided_by, decision) "
        "VALUES ('acme', :i, 'someone', 'approve')",
    ):
        with (
            pytest.raises(DBAPIError, match=f"{setting} is reserved to gov_pipeline's own"),
            acme_app.begin() as conn,
        ):
            _as(conn, "acme")
            conn.execute(text("SELECT set_config(:s, :v, true)"), {"s": setting, "v": value})
            conn.execute(text(statement), {"i": acme})
    with app_sessions.begin() as session:
        row = session.execute(text("SELECT status, title FROM policies")).one()
    assert tuple(row) == ("draft", "Acme policy")
    # Without the setting the same writer moves it legally.
    with acme_app.begin() as conn:
        _as(conn, "acme")
        conn.execute(text("UPDATE policies SET status = 'in_review' WHERE id = :i"), {"i": acme})


def test_the_application_role_sees_one_tenant_or_all_when_it_says_so(
    pg: str, app_sessions: sessionmaker[Session]
) -> None:
    new_policy(app_sessions, "acme", title="A")
    new_policy(app_sessions, "globex", title="G")
    engine = make_engine(pg, role=APP_ROLE)
    try:
        with engine.begin() as conn:
            assert _titles(conn) == []  # nothing is implicit
        with engine.begin() as conn:
            _as(conn, "globex")
            assert _titles(conn) == ["G"]
        with engine.begin() as conn:
            _as(conn, ALL_TENANTS)
            assert _titles(conn) == ["A", "G"]
        with make_sessionmaker(engine, tenant="acme").begin() as session:
            assert sorted(session.execute(text("SELECT title FROM policies")).scalars()) == ["A"]
    finally:
        engine.dispose()


def test_another_application_records_a_decision_with_one_insert_and_reads_its_outcome(
    app_sessions: sessionmaker[Session], acme_app: Engine, pg: str
) -> None:
    """The statements of docs/integration.md, as another application's login role."""
    from gov_pipeline_tests.integration.engine_support import make_settings, process
    from gov_pipeline_tests.integration.test_decisions import DECIDE, start_risk_flow

    start_risk_flow(app_sessions, pg)
    with acme_app.begin() as conn:
        _as(conn, "acme")
        approval = conn.execute(
            text("SELECT id FROM approvals WHERE status = 'pending'")
        ).scalar_one()
        decided = conn.execute(
            text(DECIDE + " RETURNING id"),
            {"tenant": "acme", "approval": approval, "user": "dave", "decision": "approve",
             "comment": "ok"},
        ).scalar_one()  # fmt: skip
    for forbidden in (
        # Its outcome is the engine's to say; an approval row is not its to write.
        "INSERT INTO approval_decisions (tenant_id, approval_id, decided_by, decision, "
        "outcome) VALUES ('acme', 1, 'dave', 'approve', 'accepted')",
        "UPDATE approval_decisions SET outcome = 'accepted'",
        "UPDATE approvals SET status = 'approved'",
    ):
        with pytest.raises(DBAPIError, match="permission denied"), acme_app.begin() as conn:
            _as(conn, "acme")
            conn.execute(text(forbidden))
    with pytest.raises(DBAPIError, match="row-level security"), acme_app.begin() as conn:
        _as(conn, "acme")  # a decision in a tenant it was not granted
        conn.execute(text(DECIDE), {"tenant": "globex", "approval": approval, "user": "dave",
                                    "decision": "approve", "comment": None})  # fmt: skip
    process(app_sessions, make_settings(pg))
    with acme_app.begin() as conn:
        _as(conn, "acme")
        outcome = conn.execute(
            text("SELECT outcome, reason FROM approval_decisions WHERE id = :i"), {"i": decided}
        ).one()
        waiting = conn.execute(
            text(
                "SELECT e.status, a.step_index FROM workflow_executions e "
                "JOIN approvals a ON a.execution_id = e.id WHERE a.status = 'pending'"
            )
        ).one()
    assert tuple(outcome) == ("accepted", None)
    assert tuple(waiting) == ("awaiting_approval", 1)  # the second step is asked now
