"""Every governed entity type, written by any writer (domain/entities.py, db/capture.py).

For each of policy, risk, compliance requirement, task, SOP and policy exception: a raw-SQL
insert is captured and triggers its workflow, whose conditions read the type's own fields
and whose actions move it through its own lifecycle and assign its owner; an illegal raw
move is refused by the database; its deadline date triggers deadline workflows; its runs
go to its lane with an ordering tag of type and id. On both databases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import ENTITY_MODELS, EntityChange, Notification, WorkflowExecution
from gov_pipeline.domain.entities import KINDS
from gov_pipeline.domain.statuses import EntityType
from gov_pipeline.orchestration.sensors import run_request
from gov_pipeline.runners.deadlines import run_review_reminders
from gov_pipeline.runners.requests import request_runs
from gov_pipeline.services import records
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import (
    NO_WAIT,
    apply_yaml,
    make_settings,
    new_policy,
    process,
)


@dataclass(frozen=True)
class Case:
    """What a raw writer inserts, what a workflow on the type checks and does."""

    entity_type: str
    insert: str  # SQL with :pid (a policy of the tenant, for references)
    condition: dict[str, Any]  # on the type's own fields
    moves_to: str  # the status its workflow's change_status gives
    illegal: str  # a move the lifecycle forbids from the initial status (or from `first`)
    deadline_field: str
    first: str | None = None  # a legal move made before the illegal one


CASES = [
    Case(
        "policy",
        "INSERT INTO policies (tenant_id, title, policy_type) VALUES ('acme', 'Raw', 'Security')",
        {"field": "new.policy_type", "op": "eq", "value": "Security"},
        "in_review", "published", "next_review_date",
    ),
    Case(
        "risk",
        "INSERT INTO risks (tenant_id, title, category, likelihood, impact) "
        "VALUES ('acme', 'Raw', 'operational', 4, 5)",
        {"field": "entity.risk_score", "op": "gte", "value": 15},  # computed by the database
        "assessed", "monitored", "next_review_date",
    ),
    Case(
        "compliance_requirement",
        "INSERT INTO compliance_requirements (tenant_id, title, framework, reference) "
        "VALUES ('acme', 'Raw', 'ISO 27001', 'A.5.18')",
        {"all": [{"field": "new.framework", "op": "eq", "value": "ISO 27001"},
                 {"field": "entity.reference", "op": "exists"}]},
        "in_progress", "compliant", "due_date",
    ),
    Case(
        "task",
        "INSERT INTO tasks (tenant_id, title) VALUES ('acme', 'Raw')",
        {"field": "new.priority", "op": "eq", "value": "medium"},  # the database's default
        "in_progress", "todo", "due_date", first="cancelled",  # every status is one move away
    ),
    Case(
        "sop",
        "INSERT INTO sops (tenant_id, title, process_area) VALUES ('acme', 'Raw', 'HR')",
        {"process_area": "HR"},
        "in_review", "published", "next_review_date",
    ),
    Case(
        "policy_exception",
        "INSERT INTO policy_exceptions (tenant_id, policy_id, title, risk_level) "
        "VALUES ('acme', :pid, 'Raw', 'high')",
        {"field": "entity.policy_id", "op": "eq", "value": "PID"},
        "under_review", "expired", "expiry_date",
    ),
]  # fmt: skip

WORKFLOW = """
name: raw writes
tenant_id: acme
type: status_change
trigger: on_create
actions:
  - {type: notify, users: [olivia], title: "New {entity.title}"}
  - {type: change_status, to: MOVES_TO}
  - {type: assign, target: owner, user: dave}
"""


@pytest.fixture
def people(sessions: sessionmaker[Session], tenant: str) -> None:
    with sessions.begin() as session:
        upsert_user(session, tenant_id="acme", user_id="olivia", roles=["policy_owner"])
        upsert_user(session, tenant_id="acme", user_id="dave", roles=["risk_manager"])


def _raw(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


def _one(sessions: sessionmaker[Session], entity_type: str) -> Any:
    model = ENTITY_MODELS[EntityType(entity_type)]
    with sessions.begin() as session:
        (record,) = session.scalars(select(model).where(model.title == "Raw")).all()
        session.expunge(record)
        return record


def _condition(case: Case, pid: int) -> dict[str, Any]:
    if case.condition.get("value") == "PID":
        return {**case.condition, "value": pid}
    return case.condition


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.entity_type)
def test_a_raw_sql_writer_of_each_entity_type_triggers_its_workflow(
    engine: Engine, sessions: sessionmaker[Session], people: None, db_url: str, case: Case
) -> None:
    settings = make_settings(db_url)
    pid = new_policy(sessions, title="Referenced")
    process(sessions, settings)  # before the workflow exists
    apply_yaml(
        sessions, WORKFLOW.replace("MOVES_TO", case.moves_to), entity_type=case.entity_type,
        conditions=_condition(case, pid),
    )  # fmt: skip
    _raw(engine, case.insert, pid=pid)
    process(sessions, settings)

    record = _one(sessions, case.entity_type)
    kind = KINDS[EntityType(case.entity_type)]
    assert record.status == case.moves_to  # change_status, through its own lifecycle
    assert records.owner_of(record) == "dave"  # assign: its owner (a task's assignee)
    with sessions.begin() as session:
        (execution,) = session.scalars(
            select(WorkflowExecution).where(WorkflowExecution.entity_type == case.entity_type)
        ).all()
        changes = session.scalars(
            select(EntityChange)
            .where(EntityChange.entity_type == case.entity_type,
                   EntityChange.entity_id == str(record.id))
            .order_by(EntityChange.id)
        ).all()  # fmt: skip
        notices = session.scalars(select(Notification.title)).all()
    assert execution.status == "completed", execution.error or execution.status_reason
    assert notices == ["New Raw"]
    # The raw insert and the workflow's two writes, each one change of the same shape.
    assert [c.kind for c in changes] == ["created", "status_changed", "updated"]
    created, moved, assigned = changes
    assert created.actor is None and created.new_values is not None
    assert set(created.new_values) == set(kind.columns)
    assert moved.caused_by_execution_id == execution.id and moved.chain_depth == 1
    assert set(moved.old_values or {}) == set(kind.always) == set(moved.new_values or {})
    assert (moved.old_values or {})["status"] == kind.lifecycle.initial
    assert assigned.changed_fields == [kind.owner_field]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.entity_type)
def test_an_illegal_raw_sql_move_of_each_entity_type_is_refused(
    engine: Engine, sessions: sessionmaker[Session], tenant: str, case: Case
) -> None:
    pid = new_policy(sessions, title="Referenced")
    _raw(engine, case.insert, pid=pid)
    kind = KINDS[EntityType(case.entity_type)]
    raw_row = f"UPDATE {kind.table} SET status = :s WHERE title = 'Raw'"
    if case.first is not None:
        _raw(engine, raw_row, s=case.first)
    standing = case.first or kind.lifecycle.initial

    def last_change() -> int | None:
        with sessions.begin() as session:
            return session.scalar(select(EntityChange.id).order_by(EntityChange.id.desc()))

    before = last_change()
    assert not kind.lifecycle.allows(standing, case.illegal)
    for status, message in (
        # SQLite's RAISE cannot quote the value: "not a <type> status" there.
        ("bogus", f"(unknown|not a) {case.entity_type} status"),
        (case.illegal, "illegal status transition"),
        (None, f"(unknown|not a) {case.entity_type} status"),
    ):
        with pytest.raises(DBAPIError, match=message):
            _raw(engine, raw_row, s=status)
    assert last_change() == before  # nothing captured
    assert _one(sessions, case.entity_type).status == standing
    # A raw insert in another status than the initial one is refused too.
    with pytest.raises(DBAPIError, match=f"a new {case.entity_type} starts as"):
        _raw(engine, case.insert.replace("'Raw'", "'Other'").replace(
            f"INSERT INTO {kind.table} (", f"INSERT INTO {kind.table} (status, ").replace(
            "VALUES (", f"VALUES ('{case.moves_to}', "), pid=pid)  # fmt: skip
    # A legal move is accepted and captured.
    allowed = sorted(kind.lifecycle.transitions[standing])
    if allowed:
        _raw(engine, raw_row, s=allowed[0])
        assert _one(sessions, case.entity_type).status == allowed[0]
        assert last_change() == (before or 0) + 1


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.entity_type)
def test_each_entity_types_deadline_date_triggers_its_deadline_workflows(
    engine: Engine, sessions: sessionmaker[Session], people: None, db_url: str, case: Case
) -> None:
    settings = make_settings(db_url)
    pid = new_policy(sessions, title="Referenced")
    apply_yaml(
        sessions,
        "name: due\ntenant_id: acme\ntype: deadline_reminder\ntrigger: on_deadline_approaching\n"
        "days_before_deadline: 10\nactions: [{type: notify, users: [olivia], title: "
        '"Due {entity.title}"}]\n',
        entity_type=case.entity_type,
    )
    _raw(engine, case.insert, pid=pid)
    table = KINDS[EntityType(case.entity_type)].table
    today = date(2030, 1, 1)
    _raw(
        engine, f"UPDATE {table} SET {case.deadline_field} = :d WHERE title = 'Raw'",
        d=today + timedelta(days=5),
    )  # fmt: skip
    first = run_review_reminders(sessions, settings, today=today, retry=NO_WAIT)
    again = run_review_reminders(sessions, settings, today=today, retry=NO_WAIT)
    assert (first.created, first.ran, again.created) == (1, 1, 0)  # once per date
    with sessions.begin() as session:
        (execution,) = session.scalars(
            select(WorkflowExecution).where(WorkflowExecution.change_id.is_(None))
        ).all()
        notices = session.scalars(select(Notification.title)).all()
    assert (execution.entity_type, execution.status) == (case.entity_type, "completed")
    assert execution.dedupe_key.endswith(f":{(today + timedelta(days=5)).isoformat()}")
    assert notices == ["Due Raw"]


def test_each_entity_types_runs_go_to_its_lane_ordered_by_type_and_id(
    engine: Engine, sessions: sessionmaker[Session], tenant: str, db_url: str
) -> None:
    pid = new_policy(sessions, title="Referenced")  # policy 1 (its change: id 1)
    for case in CASES[1:]:
        _raw(engine, case.insert, pid=pid)

    def lanes(settings_env: dict[str, str], threshold: str) -> list[tuple[str, str]]:
        settings = make_settings(db_url, GOV_PIPELINE_BATCH_THRESHOLD=threshold, **settings_env)
        tick = request_runs(sessions, None, settings)
        return [
            (run_request(run).tags["gov/queue"], run_request(run).tags["gov/entity"])
            for run in tick.runs
        ]

    one_each = lanes({}, "10")
    assert one_each == [
        ("policy", "policy:1"), ("assessment", "risk:1"), ("evidence", "compliance_requirement:1"),
        ("policy", "task:1"), ("policy", "sop:1"), ("policy", "policy_exception:1"),
    ]  # fmt: skip
    # Batched: one run per lane, never two lanes in one run.
    batched = lanes({}, "0")
    assert sorted(batched) == [
        ("assessment", "risk:1"), ("evidence", "compliance_requirement:1"),
        ("policy", "multiple"),
    ]  # fmt: skip
    # The routing is configured in one place.
    moved = lanes({"GOV_PIPELINE_ENTITY_LANES": "task=notification,risk=governance:audit"}, "10")
    assert ("notification", "task:1") in moved and ("audit", "risk:1") in moved


def test_a_workflow_cannot_move_an_entity_to_a_status_of_another_lifecycle(
    sessions: sessionmaker[Session], tenant: str
) -> None:
    from gov_pipeline.domain.errors import DefinitionError

    with pytest.raises(DefinitionError, match="'published' is not a risk status"):
        apply_yaml(sessions, WORKFLOW.replace("MOVES_TO", "published"), entity_type="risk")


CREATE: dict[str, Callable[[int], list[str]]] = {
    "policies": lambda pid: ["--title", "T", "--type", "Security"],
    "risks": lambda pid: ["--title", "T", "--category", "ops", "--likelihood", "2",
                          "--impact", "3"],
    "requirements": lambda pid: ["--title", "T", "--framework", "SOC 2", "--due", "2030-01-31"],
    "tasks": lambda pid: ["--title", "T", "--assignee", "dave", "--priority", "high"],
    "sops": lambda pid: ["--title", "T", "--area", "HR"],
    "exceptions": lambda pid: ["--title", "T", "--policy", str(pid), "--expires", "2030-06-30"],
}  # fmt: skip


@pytest.mark.parametrize("group", list(CREATE))
def test_each_entity_type_has_its_commands(
    db_url: str,
    sessions: sessionmaker[Session],
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
    group: str,
) -> None:
    import json

    from gov_pipeline.cli.records import GROUPS, SPECS
    from gov_pipeline_tests.integration.engine_support import cli_invoker

    spec = next(s for s in SPECS if s.name == group)
    kind = spec.kind
    monkeypatch.setenv("GOV_PIPELINE_DATABASE_URL", db_url)
    run = cli_invoker(capsys)
    pid = new_policy(sessions, title="Referenced")
    code, out, err = run(group, "create", "-t", "acme", *CREATE[group](pid), "--json")
    assert code == 0, err
    created = json.loads(out)
    assert created["status"] == kind.lifecycle.initial
    rid = str(created["id"])
    target = sorted(kind.lifecycle.transitions[kind.lifecycle.initial])[0]
    code, out, err = run(group, "set-status", rid, target, "-t", "acme", "--actor", "alice")
    assert (code, out.strip()) == (0, f"{kind.noun} {rid}: {kind.lifecycle.initial} -> {target}")
    code, _, err = run(group, "set-status", rid, "bogus", "-t", "acme")
    assert code == 2 and "unknown status 'bogus'" in err
    assert run(group, "update", rid, "-t", "acme", "--set", "title=Renamed")[0] == 0
    code, out, _ = run(group, "show", rid, "-t", "acme", "--json")
    shown = json.loads(out)
    assert (shown["title"], shown["status"]) == ("Renamed", target)
    code, out, _ = run(group, "list", "-t", "acme", "--status", target, "--json")
    assert code == 0 and [i["id"] for i in json.loads(out)["items"]] == [created["id"]]
    assert GROUPS[group].commands.keys() >= {"create", "update", "set-status", "show", "list",
                                             "delete", "import"}  # fmt: skip
    # Import: any status of the lifecycle, each row a change.
    last = next(s for s in reversed(kind.lifecycle.statuses) if s != target)
    options = {o.flag: o.field for o in spec.create}
    args = CREATE[group](pid)
    row = {options[flag]: value for flag, value in zip(args[0::2], args[1::2], strict=True)}
    row.update(title="Imported", status=last)
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({group: [row]}))
    code, out, err = run(group, "import", str(path), "-t", "acme", "--quiet")
    assert code == 0, err
    assert out.startswith(f"imported 1 {group}")
    code, out, _ = run(group, "list", "-t", "acme", "--status", last, "--json")
    assert [i["title"] for i in json.loads(out)["items"]] == ["Imported"]
    assert run(group, "delete", rid, "-t", "acme")[0] == 0
    code, _, err = run(group, "show", rid, "-t", "acme")
    assert code == 1 and f"{kind.noun} {rid} not found" in err


def test_dry_run_refuses_the_change_of_another_entity_type_with_the_same_id(
    engine: Engine, sessions: sessionmaker[Session], tenant: str
) -> None:
    from gov_pipeline.config import load_settings
    from gov_pipeline.domain.definitions import parse_definition
    from gov_pipeline.domain.errors import NotFoundError
    from gov_pipeline.engine.dry_run import dry_run

    settings = load_settings({})
    pid = new_policy(sessions, title="Same id")
    _raw(engine, CASES[1].insert)  # risk 1, as policy 1
    definition = parse_definition(
        {"name": "p", "tenant_id": "acme", "entity_type": "policy", "type": "notification",
         "trigger": "on_create",
         "actions": [{"type": "notify", "users": ["x"], "title": "t"}]}
    )  # fmt: skip
    with sessions.begin() as session:
        risk_change, policy_change = (
            session.scalar(select(EntityChange.id).where(EntityChange.entity_type == kind))
            for kind in ("risk", "policy")
        )
        assert risk_change is not None and pid == 1
        with pytest.raises(NotFoundError, match=f"change {risk_change} not found"):
            dry_run(session, definition, entity_id=pid, settings=settings, change_id=risk_change)
        assert dry_run(
            session, definition, entity_id=pid, settings=settings, change_id=policy_change
        )["would_run"]


@pytest.mark.parametrize(
    ("table", "column", "insert"),
    [
        ("policy_exceptions", "policy_id",
         "INSERT INTO policy_exceptions (tenant_id, policy_id, title) VALUES ('acme', :p, 'E')"),
        ("sops", "policy_id",
         "INSERT INTO sops (tenant_id, title, process_area, policy_id) VALUES ('acme', 'S', 'HR', :p)"),
        ("compliance_requirements", "policy_id",
         "INSERT INTO compliance_requirements (tenant_id, title, framework, policy_id) "
         "VALUES ('acme', 'R', 'SOC 2', :p)"),
        ("policies", "parent_policy_id",
         "INSERT INTO policies (tenant_id, title, policy_type, parent_policy_id) "
         "VALUES ('acme', 'C', 'Security', :p)"),
    ],
    ids=lambda v: v if " " not in v else "",
)  # fmt: skip
def test_a_raw_writer_cannot_link_a_record_to_another_tenants_policy(
    engine: Engine, sessions: sessionmaker[Session], tenant: str,
    table: str, column: str, insert: str,
) -> None:  # fmt: skip
    ours = new_policy(sessions, title="Ours")
    theirs = new_policy(sessions, "globex", title="Theirs")
    gone = new_policy(sessions, title="Deleted")
    _raw(engine, "UPDATE policies SET deleted_at = updated_at WHERE id = :p", p=gone)
    for policy in (theirs, gone, 999):
        with pytest.raises(
            DBAPIError, match=f"{column}: no (policy {policy} in tenant 'acme'|such policy)"
        ):
            _raw(engine, insert, p=policy)
    _raw(engine, insert, p=ours)
    # Moved to another tenant's policy afterwards: refused the same way.
    with pytest.raises(DBAPIError, match=f"{column}: no"):
        _raw(engine, f"UPDATE {table} SET {column} = :p WHERE {column} = :o", p=theirs, o=ours)
    with engine.connect() as conn:
        linked = conn.execute(
            text(f"SELECT count(*) FROM {table} WHERE {column} = :o"), {"o": ours}
        )
        assert linked.scalar_one() == 1


@pytest.mark.parametrize(
    "insert",
    [
        "INSERT INTO risks (tenant_id, title, category, treatment) VALUES ('acme', 'R', 'x', 'ignore')",
        "INSERT INTO risks (tenant_id, title, category, review_frequency) "
        "VALUES ('acme', 'R', 'x', 'hourly')",
        "INSERT INTO sops (tenant_id, title, process_area, review_frequency) "
        "VALUES ('acme', 'S', 'HR', 'weekly')",
        "INSERT INTO policy_exceptions (tenant_id, policy_id, title, risk_level) "
        "VALUES ('acme', :p, 'E', 'extreme')",
    ],
    ids=["treatment", "risk-review_frequency", "sop-review_frequency", "risk_level"],
)  # fmt: skip
def test_a_raw_writer_cannot_store_a_value_outside_a_fields_choices(
    engine: Engine, sessions: sessionmaker[Session], tenant: str, insert: str
) -> None:
    pid = new_policy(sessions)
    with pytest.raises(DBAPIError, match=r"(?i)check constraint"):
        _raw(engine, insert, p=pid)
    _raw(engine, insert.replace("'ignore'", "'accept'").replace("'hourly'", "'annual'")
         .replace("'weekly'", "'monthly'").replace("'extreme'", "'high'"), p=pid)  # fmt: skip


def test_dry_run_of_a_scheduled_workflow_reads_the_record_as_a_tick_does(
    sessions: sessionmaker[Session], tenant: str, db_url: str
) -> None:
    from gov_pipeline.domain.definitions import parse_definition
    from gov_pipeline.engine.dry_run import dry_run

    pid = new_policy(sessions, title="Ticked")
    definition = parse_definition(
        {"name": "s", "tenant_id": "acme", "entity_type": "policy", "type": "notification",
         "trigger": "scheduled", "schedule": {"cron": "0 9 * * 1"},
         "conditions": {"any": [{"field": "changed", "op": "contains", "value": "title"},
                                {"field": "new.title", "op": "eq", "value": "Ticked"}]},
         "actions": [{"type": "notify", "users": ["x"], "title": "t"}]}
    )  # fmt: skip
    with sessions.begin() as session:
        report = dry_run(session, definition, entity_id=pid, settings=make_settings(db_url))
    # `changed` is empty on a tick (as if created, every field would have changed).
    assert report["would_run"] is True
    assert report["failed_conditions"] == []
    changed_only = definition.model_copy(
        update={"conditions": {"field": "changed", "op": "contains", "value": "title"}}
    )
    with sessions.begin() as session:
        report = dry_run(
            session, parse_definition(changed_only.model_dump(mode="json")), entity_id=pid,
            settings=make_settings(db_url),
        )  # fmt: skip
    assert report["would_run"] is False
