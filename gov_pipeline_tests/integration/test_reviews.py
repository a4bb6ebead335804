"""Review cycles for every writer (db/reviews.py), on both databases: publishing a policy or
SOP dates it (published_date, next_review_date from review_frequency) through the service and
through raw SQL, captured in the publication's one change row; a row inserted into `reviews`
(service, CLI, raw SQL, the Dagster job, another application's login on PostgreSQL) is
checked and moves the record's next review, as a change of the reviewer's; the deadline
workflows follow the new date; the migration goes down and up with its triggers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.capture import set_change_context
from gov_pipeline.db.migrate import current_revision, downgrade, head_revision, upgrade
from gov_pipeline.db.models import ENTITY_MODELS, EntityChange, Review, WorkflowExecution
from gov_pipeline.db.reviews import install_review_cycles
from gov_pipeline.domain.entities import kind_of
from gov_pipeline.domain.errors import ConflictError, InvalidInputError, NotFoundError
from gov_pipeline.domain.statuses import EntityType
from gov_pipeline.orchestration.operator_jobs import complete_review_job
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners.deadlines import run_review_reminders
from gov_pipeline.services import records, reviews
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import (
    NO_WAIT,
    another_application,
    apply_yaml,
    cli_invoker,
    make_settings,
)
from gov_pipeline_tests.unit.test_review_cycles import plus_months

ROOT = Path(__file__).resolve().parents[2]
# Every frequency and the months to the next review (None: none scheduled).
FREQUENCIES = [
    ("annual", 12), ("biennial", 24), ("triennial", 36), ("quarterly", 3), ("monthly", 1),
    ("as_needed", None), (None, None),
]  # fmt: skip
GIVEN = date(2030, 1, 15)  # a next review date the writer gave
REQUIRED = {"policy": {"policy_type": "Security"}, "sop": {"process_area": "HR"},
            "risk": {"category": "operational"}}  # fmt: skip
TO_PUBLISHED = ("in_review", "approved", "published")


def expected_next(day: date, months: int | None, otherwise: date | None) -> date | None:
    return otherwise if months is None else plus_months(day, months)


def db_today(engine: Engine) -> date:
    """The day as the database sees it (CURRENT_DATE: UTC on SQLite)."""
    with engine.connect() as conn:
        value = conn.execute(text("SELECT CURRENT_DATE")).scalar_one()
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def changes(sessions: sessionmaker[Session], entity_type: str, rid: int) -> list[EntityChange]:
    with sessions.begin() as session:
        return list(
            session.scalars(
                select(EntityChange)
                .where(EntityChange.entity_type == entity_type,
                       EntityChange.entity_id == str(rid))
                .order_by(EntityChange.id)
            )
        )  # fmt: skip


def dates(engine: Engine, table: str, rid: int) -> tuple[Any, ...]:
    with engine.connect() as conn:
        row = conn.execute(
            text(f"SELECT published_date, next_review_date FROM {table} WHERE id = :i"), {"i": rid}
        ).one()
    return tuple(None if v is None else date.fromisoformat(str(v)) for v in row)


def create(
    sessions: sessionmaker[Session], entity_type: str = "policy", tenant: str = "acme",
    **fields: Any,
) -> int:  # fmt: skip
    """A record; with a `status`, loaded as an import would load it."""
    values = {"title": f"A {entity_type}", **REQUIRED[entity_type], **fields}
    with sessions.begin() as session:
        return records.create_record(
            session, entity_type, tenant_id=tenant, fields=values, importing="status" in fields
        ).id


def review(
    sessions: sessionmaker[Session], entity_type: str, rid: int, by: str = "dave",
    tenant: str = "acme",
) -> date | None:  # fmt: skip
    with sessions.begin() as session:
        return reviews.complete_review(
            session, tenant_id=tenant, entity_type=entity_type, entity_id=rid, reviewed_by=by
        )


def assert_publication_change(
    change: EntityChange, today: date, months: int | None, before: date | None
) -> None:
    """The publication's one change row holds the dates the database set."""
    assert change.kind == "status_changed"
    new, old = change.new_values or {}, change.old_values or {}
    assert new["published_date"] == today.isoformat() and old["published_date"] is None
    assert "published_date" in change.changed_fields
    if months is None:  # left as it was: not a changed field
        assert "next_review_date" not in change.changed_fields and "next_review_date" not in new
    else:
        assert new["next_review_date"] == plus_months(today, months).isoformat()
        assert old["next_review_date"] == (before.isoformat() if before else None)
        assert "next_review_date" in change.changed_fields


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgres_counts_the_interval_as_the_calendar_every_day_of_two_years(
    engine: Engine,
) -> None:
    """The SQLite form is checked the same way in unit/test_review_cycles.py."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT d::date, f, gov_next_review_date(d::date, f) "
                "FROM generate_series('2027-01-01'::date, '2028-12-31'::date, interval '1 day')"
                " AS d, unnest(CAST(:fs AS text[])) AS f"
            ),
            {"fs": [f for f, _ in FREQUENCIES if f is not None]},
        ).all()
    months = {f: m for f, m in FREQUENCIES}
    assert len(rows) == 731 * 6
    wrong = [r for r in rows if r[2] != expected_next(r[0], months[r[1]], None)]
    assert wrong == []


# -- publishing -----------------------------------------------------------------------------


@pytest.mark.parametrize(("frequency", "months"), FREQUENCIES)
def test_publishing_through_the_service_dates_the_policy(
    sessions: sessionmaker[Session], engine: Engine, tenant: str, frequency: str | None,
    months: int | None,
) -> None:  # fmt: skip
    pid = create(sessions, review_frequency=frequency, next_review_date=GIVEN)
    for status in TO_PUBLISHED:
        with sessions.begin() as session:
            published = records.transition_record(
                session, "policy", tenant_id="acme", record_id=pid, to_status=status,
                actor=records.Actor("alice"),
            )  # fmt: skip
            shown = (published.published_date, published.next_review_date)
    today = db_today(engine)
    expected = (today, expected_next(today, months, GIVEN))
    assert dates(engine, "policies", pid) == expected
    assert shown == expected  # the service reads back what the database set
    captured = changes(sessions, "policy", pid)
    assert len(captured) == 4  # created, and one change per move: no second row
    assert_publication_change(captured[-1], today, months, GIVEN)
    assert captured[-1].actor == "alice"


@pytest.mark.parametrize(("frequency", "months"), FREQUENCIES)
@pytest.mark.parametrize("entity_type", ["policy", "sop"])
def test_publishing_with_raw_sql_dates_the_record(
    sessions: sessionmaker[Session], engine: Engine, tenant: str, entity_type: str,
    frequency: str | None, months: int | None,
) -> None:  # fmt: skip
    table = kind_of(entity_type).table
    (column, value), = REQUIRED[entity_type].items()  # fmt: skip
    with engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO {table} (tenant_id, title, {column}, review_frequency) "
                 f"VALUES ('acme', 'Raw', :v, :f)"),
            {"v": value, "f": frequency},
        )  # fmt: skip
        rid = int(conn.execute(text(f"SELECT max(id) FROM {table}")).scalar_one())
    for status in TO_PUBLISHED:
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE {table} SET status = :s WHERE id = :i"),
                         {"s": status, "i": rid})  # fmt: skip
    today = db_today(engine)
    assert dates(engine, table, rid) == (today, expected_next(today, months, None))
    captured = changes(sessions, entity_type, rid)
    assert len(captured) == 4
    assert_publication_change(captured[-1], today, months, None)


@pytest.mark.parametrize(
    ("frequency", "given", "expected"),
    [
        ("monthly", date(2027, 1, 31), date(2027, 2, 28)),
        ("quarterly", date(2027, 11, 30), date(2028, 2, 29)),
        ("annual", date(2028, 2, 29), date(2029, 2, 28)),
        ("monthly", date(2027, 12, 15), date(2028, 1, 15)),
        ("triennial", date(2027, 3, 31), date(2030, 3, 31)),
    ],
)
def test_a_published_date_the_writer_gives_is_kept_and_counted_from(
    sessions: sessionmaker[Session], engine: Engine, tenant: str, frequency: str,
    given: date, expected: date,
) -> None:  # fmt: skip
    pid = create(sessions, status="approved", review_frequency=frequency)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE policies SET status = 'published', published_date = :d, "
                "owner_id = 'olivia' WHERE id = :i"
            ),
            {"d": given, "i": pid},
        )
    assert dates(engine, "policies", pid) == (given, expected)
    publication = changes(sessions, "policy", pid)[-1]
    assert set(publication.changed_fields) == {
        "status", "published_date", "next_review_date", "owner_id",
    }  # fmt: skip
    assert (publication.new_values or {})["owner_id"] == "olivia"
    assert (publication.new_values or {})["published_date"] == given.isoformat()
    assert (publication.new_values or {})["next_review_date"] == expected.isoformat()
    # Published again later without a date: the day, not the old date kept.
    for status in TO_PUBLISHED:
        with engine.begin() as conn:
            conn.execute(text("UPDATE policies SET status = :s WHERE id = :i"),
                         {"s": status, "i": pid})  # fmt: skip
    today = db_today(engine)
    assert dates(engine, "policies", pid) == (today, plus_months(today, {
        "monthly": 1, "quarterly": 3, "annual": 12, "triennial": 36}[frequency]))  # fmt: skip
    again = changes(sessions, "policy", pid)[-1]
    assert (again.old_values or {})["published_date"] == given.isoformat()
    assert (again.new_values or {})["published_date"] == today.isoformat()


def test_an_imported_published_record_is_dated_unless_it_gives_its_next_review(
    sessions: sessionmaker[Session], engine: Engine, tenant: str
) -> None:
    scheduled = create(sessions, "sop", status="published", review_frequency="quarterly")
    own = create(sessions, status="published", review_frequency="annual", next_review_date=GIVEN)
    today = db_today(engine)
    assert dates(engine, "sops", scheduled) == (today, plus_months(today, 3))
    assert dates(engine, "policies", own) == (today, GIVEN)
    (created,) = changes(sessions, "sop", scheduled)
    assert (created.new_values or {})["next_review_date"] == plus_months(today, 3).isoformat()
    assert (created.new_values or {})["published_date"] == today.isoformat()


# -- completing a review ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity_type", "frequency", "months"),
    [("policy", "annual", 12), ("sop", "monthly", 1), ("risk", "quarterly", 3),
     ("risk", "as_needed", None), ("policy", None, None)],
)  # fmt: skip
def test_a_completed_review_moves_the_next_review_as_the_reviewers_change(
    sessions: sessionmaker[Session], engine: Engine, tenant: str, entity_type: str,
    frequency: str | None, months: int | None,
) -> None:  # fmt: skip
    overdue = date(2020, 1, 1)
    status = "identified" if entity_type == "risk" else "published"
    rid = create(sessions, entity_type, status=status, review_frequency=frequency,
                 next_review_date=overdue)  # fmt: skip
    model = ENTITY_MODELS[EntityType(entity_type)]
    with sessions.begin() as session:
        set_change_context(session, actor="tx-actor")
        held = session.get(model, rid)  # a copy the session holds
        got = reviews.complete_review(
            session, tenant_id="acme", entity_type=entity_type, entity_id=rid,
            reviewed_by="dave", notes="Still accurate",
        )  # fmt: skip
        assert held is not None and held.next_review_date == got  # read back
        # The transaction's own actor is back for its next write.
        session.execute(
            text(f"UPDATE {kind_of(entity_type).table} SET title = 'Renamed' WHERE id = :i"),
            {"i": rid},
        )
    today = db_today(engine)
    assert got == expected_next(today, months, None)
    with sessions.begin() as session:
        row = session.scalars(select(Review)).one()
        record = session.get(model, rid)
        assert record is not None
        assert (record.next_review_date, record.updated_by) == (got, "dave")
    assert (row.tenant_id, row.entity_type, row.entity_id) == ("acme", entity_type, rid)
    assert (row.reviewed_by, row.notes, row.next_review_date) == ("dave", "Still accurate", got)
    *_, reviewed, renamed = changes(sessions, entity_type, rid)
    assert (reviewed.kind, reviewed.changed_fields, reviewed.actor) == (
        "updated", ["next_review_date"], "dave",
    )  # fmt: skip
    assert (reviewed.old_values or {})["next_review_date"] == overdue.isoformat()
    assert (reviewed.new_values or {})["next_review_date"] == (got.isoformat() if got else None)
    assert (renamed.changed_fields, renamed.actor) == (["title"], "tx-actor")


def test_a_raw_insert_records_a_review_and_leaves_no_context_behind(
    sessions: sessionmaker[Session], engine: Engine, tenant: str, is_pg: bool
) -> None:
    pid = create(sessions, status="published", review_frequency="biennial")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO reviews (tenant_id, entity_type, entity_id, reviewed_by) "
                 "VALUES ('acme', 'policy', :i, 'erin')"),
            {"i": pid},
        )  # fmt: skip
        row = conn.execute(text("SELECT reviewed_by, notes, next_review_date FROM reviews")).one()
        if not is_pg:
            assert conn.execute(text("SELECT count(*) FROM capture_context")).scalar_one() == 0
    today = db_today(engine)
    # Reviewed the day it was published: the same next date, so no change of the record.
    assert dates(engine, "policies", pid) == (today, plus_months(today, 24))
    assert (row[0], row[1], date.fromisoformat(str(row[2]))) == ("erin", "", plus_months(today, 24))
    assert [c.kind for c in changes(sessions, "policy", pid)] == ["created"]


def test_a_review_the_database_refuses_writes_nothing_and_names_why(
    sessions: sessionmaker[Session], tenant: str
) -> None:
    draft = create(sessions)
    deleted = create(sessions, status="published", review_frequency="annual")
    closed = create(sessions, "risk", status="closed")
    theirs = create(sessions, tenant="globex", status="published", review_frequency="annual")
    ours = create(sessions, status="published", review_frequency="annual")
    with sessions.begin() as session:
        records.soft_delete_record(session, "policy", tenant_id="acme", record_id=deleted)
    before = len(changes(sessions, "policy", deleted))
    cases: list[tuple[type[Exception], str, str, Any, str]] = [
        (NotFoundError, "policy", "acme", 999, "policy 999 not found in tenant 'acme'"),
        (NotFoundError, "policy", "acme", theirs, f"policy {theirs} not found in tenant 'acme'"),
        (NotFoundError, "policy", "acme", deleted, f"policy {deleted} not found"),
        (ConflictError, "policy", "acme", draft,
         f"policy {draft} is draft: policy reviews need status published"),
        (ConflictError, "risk", "acme", closed, f"risk {closed} is closed: risk reviews need "
         "status identified, assessed, mitigating, accepted or monitored"),
        (InvalidInputError, "task", "acme", 1, "a task has no review cycle (one of: policy, risk, sop)"),
        (InvalidInputError, "policy", "acme", "x", "not a policy id"),
        (NotFoundError, "policy", "ghost", ours, "tenant 'ghost' not found"),
    ]  # fmt: skip
    with sessions.begin() as session:
        for error, entity_type, tenant_id, rid, message in cases:
            with pytest.raises(error, match=re.escape(message)):
                reviews.complete_review(
                    session, tenant_id=tenant_id, entity_type=entity_type, entity_id=rid,
                    reviewed_by="dave",
                )  # fmt: skip
        # The refusals left the transaction usable.
        reviews.complete_review(
            session, tenant_id="acme", entity_type="policy", entity_id=ours, reviewed_by="dave"
        )
    with pytest.raises(InvalidInputError, match="reviewed_by: is required"):
        review(sessions, "policy", ours, by="")
    with sessions.begin() as session:
        assert [r.entity_id for r in session.scalars(select(Review))] == [ours]
    assert len(changes(sessions, "policy", deleted)) == before


# PostgreSQL's message, SQLite's (which cannot quote values), the SQLSTATE.
RAW_REFUSALS = [
    ("'task', 1", "review: 'task' has no review cycle (one of: policy, risk, sop)",
     "review: no review cycle for this entity type (one of: policy, risk, sop)", "23514"),
    ("'policy', 999", "review: policy 999 not found in tenant 'acme'",
     "review: policy not found in the review's tenant", "23503"),
    ("'policy', {theirs}", "review: policy {theirs} not found in tenant 'acme'",
     "review: policy not found in the review's tenant", "23503"),
    ("'policy', {deleted}", "review: policy {deleted} is deleted",
     "review: the policy is deleted", "23503"),
    ("'sop', {draft}", "review: SOP {draft} is in_review; SOP reviews need status published",
     "review: the SOP is in_review; SOP reviews need status published", "23514"),
]  # fmt: skip


def test_the_database_refuses_a_raw_review_of_no_reviewable_record(
    sessions: sessionmaker[Session], engine: Engine, tenant: str, is_pg: bool
) -> None:
    ids = {
        "theirs": create(sessions, tenant="globex", status="published"),
        "deleted": create(sessions, status="published"),
        "draft": create(sessions, "sop", status="in_review"),
    }
    with sessions.begin() as session:
        records.soft_delete_record(session, "policy", tenant_id="acme", record_id=ids["deleted"])
    for target, pg_message, sqlite_message, sqlstate in RAW_REFUSALS:
        statement = (
            "INSERT INTO reviews (tenant_id, entity_type, entity_id, reviewed_by) "
            f"VALUES ('acme', {target.format(**ids)}, 'dave')"
        )
        message = (pg_message if is_pg else sqlite_message).format(**ids)
        with pytest.raises(DBAPIError, match=re.escape(message)) as refused, engine.begin() as c:
            c.execute(text(statement))
        if is_pg:
            assert refused.value.orig.pgcode == sqlstate  # type: ignore[union-attr]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM reviews")).scalar_one() == 0


@pytest.fixture
def run(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", db_url)
    monkeypatch.delenv("GOV_PIPELINE_TENANT", raising=False)
    return cli_invoker(capsys)


def test_complete_review_on_the_command_line(
    run: Any, sessions: sessionmaker[Session], engine: Engine, tenant: str
) -> None:
    pid = create(sessions, status="published", review_frequency="triennial", next_review_date=GIVEN)
    sid = create(sessions, "sop", status="published")
    rid = create(sessions, "risk", review_frequency="monthly")
    draft = create(sessions)
    today = db_today(engine)
    code, out, _ = run("policies", "complete-review", str(pid), "-t", "acme", "--as", "dave",
                       "--notes", "Owner confirmed")  # fmt: skip
    assert code == 0
    assert out.strip() == f"policy {pid} reviewed by dave; next review {plus_months(today, 36)}"
    code, out, _ = run("sops", "complete-review", str(sid), "-t", "acme", "--as", "erin")
    assert (code, out.strip()) == (
        0, f"SOP {sid} reviewed by erin; no next review (review_frequency as_needed or not set)",
    )  # fmt: skip
    assert run("risks", "complete-review", str(rid), "-t", "acme", "--as", "rita")[0] == 0
    assert dates(engine, "policies", pid)[1] == plus_months(today, 36)
    with sessions.begin() as session:
        rows = [(r.entity_type, r.reviewed_by, r.notes) for r in session.scalars(
            select(Review).order_by(Review.id))]  # fmt: skip
    assert rows == [
        ("policy", "dave", "Owner confirmed"),
        ("sop", "erin", ""),
        ("risk", "rita", ""),
    ]
    code, _, err = run("policies", "complete-review", str(draft), "-t", "acme", "--as", "dave")
    assert code == 1
    assert err.strip() == f"error: policy {draft} is draft: policy reviews need status published"
    assert run("policies", "complete-review", str(pid), "-t", "acme")[0] == 2  # --as required
    assert run("tasks", "complete-review", "1", "-t", "acme", "--as", "dave")[0] == 2


def test_the_complete_review_job_in_process(
    db_url: str, sessions: sessionmaker[Session], engine: Engine, tenant: str
) -> None:
    make_settings(db_url)
    pid = create(sessions, status="published", review_frequency="quarterly")
    draft = create(sessions)

    def launch(entity_id: int) -> Any:
        config = {"tenant_id": "acme", "entity_type": "policy", "entity_id": entity_id,
                  "reviewed_by": "dave", "notes": "From the launchpad"}  # fmt: skip
        return complete_review_job.execute_in_process(
            run_config={"ops": {"record_review": {"config": config}}},
            resources={"database": DatabaseResource(url=db_url)}, raise_on_error=False,
        )  # fmt: skip

    done = launch(pid)
    assert done.success
    (output,) = [e for e in done.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata  # type: ignore[union-attr]
    expected = plus_months(db_today(engine), 3).isoformat()
    assert metadata["next_review_date"].value == expected
    assert metadata["reviewed_by"].value == "dave"
    refused = launch(draft)
    assert not refused.success
    failure = next(e for e in refused.all_events if e.event_type_value == "STEP_FAILURE")
    assert "is draft: policy reviews need status published" in str(failure.event_specific_data)
    with sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Review)) == 1


# -- another application, on PostgreSQL -------------------------------------------------------


@pytest.fixture
def portal(db_url: str, tenant: str) -> Iterator[Engine]:
    """A login role of another application, a member of gov_writer granted tenant acme."""
    with another_application(db_url) as engine:
        yield engine


def _acme(conn: Any) -> None:
    conn.execute(text("SELECT set_config('gov.tenant_id', 'acme', true)"))


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_another_application_completes_a_review_of_its_own_tenants_records_only(
    sessions: sessionmaker[Session], engine: Engine, portal: Engine
) -> None:
    ours = create(sessions, status="published", review_frequency="annual", next_review_date=GIVEN)
    theirs = create(sessions, tenant="globex", status="published", review_frequency="annual")
    insert = ("INSERT INTO reviews (tenant_id, entity_type, entity_id, reviewed_by, notes) "
              "VALUES (:t, 'policy', :i, 'portal-dave', 'ok')")  # fmt: skip
    with portal.begin() as conn:
        _acme(conn)
        conn.execute(text(insert), {"t": "acme", "i": ours})
        mine = conn.execute(text("SELECT entity_id, next_review_date FROM reviews")).all()
    today = db_today(engine)
    assert [tuple(r) for r in mine] == [(ours, plus_months(today, 12))]
    reviewed = changes(sessions, "policy", ours)[-1]
    assert (reviewed.kind, reviewed.actor, reviewed.changed_fields) == (
        "updated", "portal-dave", ["next_review_date"],
    )  # fmt: skip
    for statement, params, message in (
        # Its own schedule is the database's to write.
        ("INSERT INTO reviews (tenant_id, entity_type, entity_id, reviewed_by, "
         "next_review_date) VALUES ('acme', 'policy', :i, 'x', '2099-01-01')", {"i": ours},
         "permission denied for table reviews"),
        ("UPDATE reviews SET next_review_date = '2099-01-01'", {},
         "permission denied for table reviews"),
        # Another tenant's record, named in its own tenant or in the other one.
        (insert, {"t": "acme", "i": theirs}, f"review: policy {theirs} not found in tenant 'acme'"),
        (insert, {"t": "globex", "i": theirs},
         f"review: policy {theirs} not found in tenant 'globex'"),
    ):  # fmt: skip
        with pytest.raises(DBAPIError, match=re.escape(message)), portal.begin() as conn:
            _acme(conn)
            conn.execute(text(statement), params)
    assert dates(engine, "policies", theirs)[1] == plus_months(today, 12)  # as published
    with sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Review)) == 1


# -- the SQL of docs/integration.md ---------------------------------------------------------


def doc_statements() -> list[str]:
    """The statements of the SQL blocks of docs/integration.md, "Completing a review"."""
    doc = (ROOT / "docs" / "integration.md").read_text()
    section = doc.split("\n## Completing a review\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, flags=re.S)
    return [s.strip() for block in blocks for s in block.split(";") if s.strip()]


def test_the_documented_review_sql_runs_as_documented(
    request: pytest.FixtureRequest, sessions: sessionmaker[Session], engine: Engine,
    tenant: str, is_pg: bool,
) -> None:  # fmt: skip
    pid = create(sessions, status="published", review_frequency="annual", next_review_date=GIVEN)
    assert pid == 1  # the documented id
    writer: Engine = request.getfixturevalue("portal") if is_pg else engine
    statements = doc_statements()
    assert [s.split()[0] for s in statements] == ["INSERT", "SELECT", "SELECT"]
    with writer.begin() as conn:
        if is_pg:
            _acme(conn)  # as "Connecting" says
        conn.execute(text(statements[0]))
        scheduled = conn.execute(text(statements[1])).scalar_one()
        record = tuple(conn.execute(text(statements[2])).one())
    expected = plus_months(db_today(engine), 12)
    assert date.fromisoformat(str(scheduled)) == expected
    assert (date.fromisoformat(str(record[0])), record[1]) == (expected, "dave")
    assert changes(sessions, "policy", pid)[-1].actor == "dave"


# -- the deadline triggers follow the review ------------------------------------------------

DEADLINES = """
name: {name}
tenant_id: acme
type: deadline_reminder
trigger: {trigger}
{days}
actions:
  - {{type: notify, users: [olivia], title: "Review {{entity.title}} by {{entity.next_review_date}}"}}
"""


def test_a_completed_review_moves_the_deadline_the_reminders_watch(
    db_url: str, sessions: sessionmaker[Session], engine: Engine, tenant: str
) -> None:
    settings = make_settings(db_url)
    with sessions.begin() as session:
        upsert_user(session, tenant_id="acme", user_id="olivia", roles=["policy_owner"])
    apply_yaml(sessions, DEADLINES.format(name="Due soon", trigger="on_deadline_approaching",
                                          days="days_before_deadline: 30"))  # fmt: skip
    apply_yaml(sessions, DEADLINES.format(name="Overdue", trigger="on_deadline_passed", days=""))
    today = db_today(engine)
    old = today - timedelta(days=3)
    pid = create(sessions, status="published", review_frequency="annual", next_review_date=old)

    def remind(day: date) -> list[str]:
        run_review_reminders(sessions, settings, today=day, retry=NO_WAIT, sleep=lambda s: None)
        with sessions.begin() as session:
            return list(session.scalars(
                select(WorkflowExecution.dedupe_key).order_by(WorkflowExecution.id)))  # fmt: skip

    passed_old = f"deadline:on_deadline_passed:{pid}:{old}"
    assert remind(today) == [passed_old]
    new = review(sessions, "policy", pid)
    assert new == plus_months(today, 12)
    # Not due again before the new date comes near, whatever day the schedule runs.
    for day in (today, today + timedelta(days=1), new - timedelta(days=31)):
        assert remind(day) == [passed_old]
    approaching_new = f"deadline:on_deadline_approaching:{pid}:{new}"
    assert remind(new - timedelta(days=30)) == [passed_old, approaching_new]
    assert remind(new) == [passed_old, approaching_new]  # once per date
    assert remind(new + timedelta(days=1)) == [
        passed_old, approaching_new, f"deadline:on_deadline_passed:{pid}:{new}",
    ]  # fmt: skip


# -- the migration ----------------------------------------------------------------------------


def _triggers(engine: Engine, is_pg: bool) -> set[str]:
    query = (
        "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
        if is_pg
        else "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    )
    with engine.connect() as conn:
        names = {str(n) for n in conn.execute(text(query)).scalars()}
    return {n for n in names if n.endswith("_publication") or n.startswith("gov_reviews_")}


def test_the_review_cycles_go_down_and_up_with_their_revision_and_install_twice(
    db_url: str, sessions: sessionmaker[Session], engine: Engine, tenant: str, is_pg: bool
) -> None:
    installed = _triggers(engine, is_pg)
    assert {"gov_policies_publication", "gov_sops_publication", "gov_reviews_complete"} <= installed
    downgrade(db_url, "0005")
    assert _triggers(engine, is_pg) == set()
    upgrade(db_url)
    assert current_revision(db_url) == head_revision()
    assert _triggers(engine, is_pg) == installed
    with engine.begin() as conn:  # idempotent: the same triggers once
        install_review_cycles(conn)
        install_review_cycles(conn)
    assert _triggers(engine, is_pg) == installed
    pid = create(sessions, status="approved", review_frequency="monthly")
    with sessions.begin() as session:
        records.transition_record(
            session, "policy", tenant_id="acme", record_id=pid, to_status="published"
        )
    assert review(sessions, "policy", pid) == plus_months(db_today(engine), 1)
    assert [c.kind for c in changes(sessions, "policy", pid)] == ["created", "status_changed"]
