"""Decisions from any writer (docs/integration.md): one INSERT into `approval_decisions`,
captured as an `approval_decided` change, applied by processing with the checks of the CLI
path (services/approvals.py `apply_decision`), or refused with its reason, changing
nothing else. On both databases (as another application's login role on PostgreSQL:
test_row_level_security.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import (
    Approval,
    ApprovalDecision,
    EntityChange,
    Notification,
    ProcessedChange,
    Risk,
    WorkflowExecution,
)
from gov_pipeline.domain.errors import PermissionDeniedError
from gov_pipeline.services import approvals, records
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import apply_yaml, make_settings, process

RISK_REVIEW = """
name: risk acceptance
tenant_id: acme
type: approval
trigger: on_status_change
entity_type: risk
conditions:
  all:
    - {field: new.status, op: changed_to, value: assessed}
    - {field: entity.risk_score, op: gte, value: 12}
actions:
  - type: request_approval
    mode: sequential
    steps:
      - {name: risk owner, approvers: {roles: [risk_manager]}}
      - {name: CISO, approvers: {users: [ciso]}}
    on_approved:
      - {type: change_status, to: accepted}
      - {type: notify, users: [olivia], title: "Risk accepted: {entity.title}"}
    on_changes_requested:
      - {type: notify, users: [olivia], title: "Reassess {entity.title}"}
"""

# The statement of docs/integration.md, "Recording a decision".
DECIDE = (
    "INSERT INTO approval_decisions (tenant_id, approval_id, decided_by, decision, comment) "
    "VALUES (:tenant, :approval, :user, :decision, :comment)"
)


@pytest.fixture
def flow(sessions: sessionmaker[Session], tenant: str, db_url: str) -> int:
    return start_risk_flow(sessions, db_url)


def start_risk_flow(sessions: sessionmaker[Session], db_url: str) -> int:
    """A risk assessed with a score of 20 in tenant acme (tenants acme and globex exist):
    its two-step acceptance waits for step 1 (dave, a risk manager; then ciso)."""
    with sessions.begin() as session:
        for user, role in (("dave", "risk_manager"), ("ciso", "admin"), ("olivia", "viewer"),
                           ("mallory", "viewer")):  # fmt: skip
            upsert_user(session, tenant_id="acme", user_id=user, roles=[role])
        upsert_user(session, tenant_id="globex", user_id="dave", roles=["risk_manager"])
    apply_yaml(sessions, RISK_REVIEW)
    with sessions.begin() as session:
        risk = records.create_record(
            session, "risk", tenant_id="acme",
            fields={"title": "Vendor outage", "category": "operational", "likelihood": 4,
                    "impact": 5},
        )  # fmt: skip
        rid = risk.id
    with sessions.begin() as session:
        records.transition_record(
            session, "risk", tenant_id="acme", record_id=rid, to_status="assessed"
        )
    process(sessions, make_settings(db_url))
    return rid


def _steps(sessions: sessionmaker[Session]) -> list[tuple[str, str | None]]:
    with sessions.begin() as session:
        rows = session.scalars(select(Approval).order_by(Approval.step_index)).all()
        return [(a.status, a.decided_by) for a in rows]


def _step_id(sessions: sessionmaker[Session], index: int) -> int:
    with sessions.begin() as session:
        return int(session.scalars(select(Approval.id).where(Approval.step_index == index)).one())


def _decide(engine: Engine, approval: int, user: str, decision: str = "approve",
            tenant: str = "acme") -> None:  # fmt: skip
    with engine.begin() as conn:
        conn.execute(
            text(DECIDE),
            {"tenant": tenant, "approval": approval, "user": user, "decision": decision,
             "comment": f"by {user}"},
        )  # fmt: skip


def _decisions(sessions: sessionmaker[Session]) -> list[tuple[str, str, str | None]]:
    with sessions.begin() as session:
        rows = session.scalars(select(ApprovalDecision).order_by(ApprovalDecision.id)).all()
        return [(d.decided_by, d.outcome, d.reason) for d in rows]


def _state(sessions: sessionmaker[Session], rid: int) -> tuple[Any, ...]:
    """Everything a refused decision must leave as it was."""
    with sessions.begin() as session:
        risk = session.get(Risk, rid)
        assert risk is not None
        executions = [(e.id, e.status) for e in session.scalars(select(WorkflowExecution))]
        approvals_ = [(a.status, a.decided_by, a.comment)
                      for a in session.scalars(select(Approval).order_by(Approval.id))]  # fmt: skip
        notices = len(session.scalars(select(Notification)).all())
        return (risk.status, executions, approvals_, notices)


def test_a_decision_written_by_raw_sql_continues_a_two_step_approval_to_its_end(
    engine: Engine, sessions: sessionmaker[Session], flow: int, db_url: str
) -> None:
    settings = make_settings(db_url)
    assert _steps(sessions) == [("pending", None), ("waiting", None)]
    _decide(engine, _step_id(sessions, 0), "dave")
    # Captured as a change about the risk, before anyone processed it.
    with sessions.begin() as session:
        change = session.scalars(
            select(EntityChange).where(EntityChange.kind == "approval_decided")
        ).one()
        row = session.scalars(select(ApprovalDecision)).one()
        assert (change.entity_type, change.entity_id, change.actor) == ("risk", str(flow), "dave")
        assert row.change_id == change.id and row.outcome == "pending"
        assert (change.new_values or {})["approval_status"] == "approved"
    assert _steps(sessions) == [("pending", None), ("waiting", None)]  # not applied yet

    process(sessions, settings)
    assert _steps(sessions) == [("approved", "dave"), ("pending", None)]
    _decide(engine, _step_id(sessions, 1), "ciso")
    process(sessions, settings)

    assert _steps(sessions) == [("approved", "dave"), ("approved", "ciso")]
    assert _decisions(sessions) == [("dave", "accepted", None), ("ciso", "accepted", None)]
    with sessions.begin() as session:
        # (The move to accepted is a change too: the workflow skips it, conditions not met.)
        (execution,) = session.scalars(
            select(WorkflowExecution).where(WorkflowExecution.status != "skipped")
        ).all()
        risk = session.get(Risk, flow)
        notices = session.scalars(select(Notification.title)).all()
        assert execution.status == "completed" and (execution.output or {})["outcome"] == "approved"
        assert risk is not None and risk.status == "accepted"  # on_approved ran, once
        assert notices.count("Risk accepted: Vendor outage") == 1
        # Where a writer reads the outcome (docs/integration.md).
        outcome = session.execute(
            text("SELECT outcome, reason FROM approval_decisions ORDER BY id DESC")
        ).first()
        assert outcome is not None and tuple(outcome) == ("accepted", None)


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [
        ("non_approver", "user 'mallory' may not decide approval"),
        ("closed_step", "is already approved"),
        ("other_tenant", "approval {approval} not found in tenant 'globex'"),
        ("waiting_step", "is not open yet"),
        ("unknown_approval", "approval 999999 not found in tenant 'acme'"),
    ],
)
def test_a_refused_decision_is_recorded_with_its_reason_and_changes_nothing(
    engine: Engine,
    sessions: sessionmaker[Session],
    flow: int,
    db_url: str,
    scenario: str,
    reason: str,
) -> None:
    settings = make_settings(db_url)
    first = _step_id(sessions, 0)
    if scenario == "closed_step":
        _decide(engine, first, "dave")
        process(sessions, settings)
    before = _state(sessions, flow)
    approval, user, tenant = {
        "non_approver": (first, "mallory", "acme"),
        "closed_step": (first, "dave", "acme"),
        "other_tenant": (first, "dave", "globex"),  # globex's dave is a risk manager there
        "waiting_step": (_step_id(sessions, 1), "ciso", "acme"),
        "unknown_approval": (999_999, "dave", "acme"),
    }[scenario]
    _decide(engine, approval, user, tenant=tenant)
    process(sessions, settings)

    assert _state(sessions, flow) == before
    user_, outcome, why = _decisions(sessions)[-1]
    assert (user_, outcome) == (user, "refused")
    assert why is not None and reason.format(approval=approval) in why
    with sessions.begin() as session:
        row = session.scalars(select(ApprovalDecision).order_by(ApprovalDecision.id.desc())).first()
        assert row is not None and row.change_id is not None
        marker = session.get(ProcessedChange, row.change_id)
        change = session.get(EntityChange, row.change_id)
    assert marker is not None and marker.outcome == "refused" and marker.note == why
    assert change is not None and change.tenant_id == tenant
    if scenario == "other_tenant":
        # The change says nothing of the other tenant's approval: not its entity, nor its
        # execution.
        assert (change.entity_type, change.entity_id) == ("approval", str(approval))
        assert (change.new_values or {})["execution_id"] is None
    # Processing it again changes nothing either.
    process(sessions, settings)
    assert _state(sessions, flow) == before


def test_the_cli_path_and_the_sql_path_are_one_path(
    sessions: sessionmaker[Session], flow: int, db_url: str
) -> None:
    """`approvals.decide` writes a decision row too, applied at once (its errors are the
    caller's); the change it returns is the one the database captured from that row."""
    first = _step_id(sessions, 0)
    with pytest.raises(PermissionDeniedError), sessions.begin() as session:
        approvals.decide(session, tenant_id="acme", approval_id=first, user_id="mallory",
                         decision="approve")  # fmt: skip
    assert _decisions(sessions) == []  # nothing written
    with sessions.begin() as session:
        change = approvals.decide(session, tenant_id="acme", approval_id=first, user_id="dave",
                                  decision="request_changes", comment="score too high")  # fmt: skip
        change_id = change.id
    assert _decisions(sessions) == [("dave", "accepted", None)]
    assert _steps(sessions)[0] == ("changes_requested", "dave")  # applied at once
    process(sessions, make_settings(db_url))
    with sessions.begin() as session:
        row = session.scalars(select(ApprovalDecision)).one()
        risk = session.get(Risk, flow)
        assert row.change_id == change_id
        # Changes requested: the risk goes back to the start of its lifecycle.
        assert risk is not None and risk.status == "identified"


def test_a_decision_outside_the_vocabulary_is_refused_by_the_database(
    engine: Engine, sessions: sessionmaker[Session], flow: int
) -> None:
    with pytest.raises(DBAPIError, match=r"known_decision|CHECK constraint"):
        _decide(engine, _step_id(sessions, 0), "dave", decision="approved")
    assert _decisions(sessions) == []
