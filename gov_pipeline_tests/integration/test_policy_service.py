"""The policy service: lifecycle enforced, bad input writes nothing, tenants isolated."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import EntityChange, Policy
from gov_pipeline.domain.errors import IllegalTransitionError, InvalidInputError, NotFoundError
from gov_pipeline.services import policies as svc


def _create(sessions: sessionmaker[Session], tenant: str = "acme", **fields: Any) -> int:
    values = {"title": "Access control", "policy_type": "Security", **fields}
    with sessions.begin() as session:
        return svc.create_policy(session, tenant_id=tenant, fields=values).id


def _counts(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with sessions.begin() as session:
        return (
            session.scalar(select(func.count()).select_from(Policy)) or 0,
            session.scalar(select(func.count()).select_from(EntityChange)) or 0,
        )


def test_walk_through_the_lifecycle(sessions: sessionmaker[Session], tenant: str) -> None:
    pid = _create(sessions)
    for status in ["in_review", "approved", "published", "in_review", "archived"]:
        with sessions.begin() as session:
            svc.transition_status(session, tenant_id=tenant, policy_id=pid, to_status=status)
    with sessions.begin() as session:
        policy = svc.get_policy(session, tenant_id=tenant, policy_id=pid)
        assert policy.status == "archived" and policy.published_date is not None
        kinds = list(session.scalars(select(EntityChange.kind).order_by(EntityChange.id)))
    assert kinds == ["created"] + ["status_changed"] * 5


def test_illegal_transition_is_refused_and_leaves_no_change(
    sessions: sessionmaker[Session], tenant: str
) -> None:
    pid = _create(sessions)
    before = _counts(sessions)
    with (
        pytest.raises(IllegalTransitionError, match="draft -> published"),
        sessions.begin() as session,
    ):
        svc.transition_status(session, tenant_id=tenant, policy_id=pid, to_status="published")
    assert _counts(sessions) == before


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: svc.get_policy(s, tenant_id="acme", policy_id=999), NotFoundError),
        (lambda s: svc.get_policy(s, tenant_id="acme", policy_id="abc"), InvalidInputError),
        (lambda s: svc.create_policy(s, tenant_id="nope", fields={"title": "t", "policy_type": "p"}), NotFoundError),
        (lambda s: svc.create_policy(s, tenant_id="", fields={"title": "t", "policy_type": "p"}), InvalidInputError),
        (lambda s: svc.create_policy(s, tenant_id="acme", fields={"title": "t"}), InvalidInputError),
        (lambda s: svc.create_policy(s, tenant_id="acme", fields={"title": "t", "policy_type": "p", "status": "live"}), InvalidInputError),
        (lambda s: svc.transition_status(s, tenant_id="acme", policy_id=999, to_status="in_review"), NotFoundError),
    ],
)  # fmt: skip
def test_bad_input_raises_clearly_and_writes_nothing(
    sessions: sessionmaker[Session], tenant: str, call: Any, error: type[Exception]
) -> None:
    before = _counts(sessions)
    with pytest.raises(error), sessions.begin() as session:
        call(session)
    assert _counts(sessions) == before


def test_a_malformed_field_in_a_multi_field_update_writes_nothing(
    sessions: sessionmaker[Session], tenant: str
) -> None:
    pid = _create(sessions)
    before = _counts(sessions)
    with pytest.raises(InvalidInputError, match="next_review_date"), sessions.begin() as session:
        svc.update_policy(
            session,
            tenant_id=tenant,
            policy_id=pid,
            fields={"title": "New title", "next_review_date": "someday"},
        )
    with sessions.begin() as session:
        assert svc.get_policy(session, tenant_id=tenant, policy_id=pid).title == "Access control"
    assert _counts(sessions) == before


def test_update_refuses_status_and_read_only_fields(
    sessions: sessionmaker[Session], tenant: str
) -> None:
    pid = _create(sessions)
    for fields in ({"status": "approved"}, {"tenant_id": "globex"}, {}):
        with pytest.raises(InvalidInputError), sessions.begin() as session:
            svc.update_policy(session, tenant_id=tenant, policy_id=pid, fields=fields)


def test_soft_delete_hides_the_policy_and_is_captured(
    sessions: sessionmaker[Session], tenant: str
) -> None:
    pid = _create(sessions)
    with sessions.begin() as session:
        svc.soft_delete_policy(session, tenant_id=tenant, policy_id=pid)
    with sessions.begin() as session:
        with pytest.raises(NotFoundError):
            svc.get_policy(session, tenant_id=tenant, policy_id=pid)
        assert svc.get_policy(session, tenant_id=tenant, policy_id=pid, include_deleted=True)
        assert svc.list_policies(session, tenant_id=tenant).total == 0
        last = session.scalars(select(EntityChange).order_by(EntityChange.id.desc())).first()
        assert last is not None and last.kind == "deleted"
    with pytest.raises(NotFoundError), sessions.begin() as session:
        svc.transition_status(session, tenant_id=tenant, policy_id=pid, to_status="in_review")


def test_list_filters_and_pages(sessions: sessionmaker[Session], tenant: str) -> None:
    ids = [_create(sessions, title=f"P{i}", owner_id="dave" if i % 2 else "erin") for i in range(5)]
    _create(sessions, policy_type="Privacy")
    with sessions.begin() as session:
        svc.transition_status(session, tenant_id=tenant, policy_id=ids[0], to_status="in_review")
        page = svc.list_policies(session, tenant_id=tenant, limit=2, offset=2)
        assert page.total == 6 and [p.id for p in page.items] == ids[2:4]
        assert svc.list_policies(session, tenant_id=tenant, status="in_review").total == 1
        assert svc.list_policies(session, tenant_id=tenant, policy_type="Privacy").total == 1
        assert svc.list_policies(session, tenant_id=tenant, owner_id="dave").total == 2
        with pytest.raises(InvalidInputError):
            svc.list_policies(session, tenant_id=tenant, limit=0)
        with pytest.raises(InvalidInputError):
            svc.list_policies(session, tenant_id=tenant, status="bogus")


def test_tenants_are_isolated_on_every_read(sessions: sessionmaker[Session], tenant: str) -> None:
    mine = _create(sessions, tenant="acme")
    theirs = _create(sessions, tenant="globex")
    with sessions.begin() as session:
        assert [p.id for p in svc.list_policies(session, tenant_id="acme").items] == [mine]
        assert [p.id for p in svc.list_policies(session, tenant_id="globex").items] == [theirs]
        with pytest.raises(NotFoundError):
            svc.get_policy(session, tenant_id="acme", policy_id=theirs)
    for write in (
        lambda s: svc.update_policy(s, tenant_id="acme", policy_id=theirs, fields={"title": "x"}),
        lambda s: svc.transition_status(
            s, tenant_id="acme", policy_id=theirs, to_status="in_review"
        ),
        lambda s: svc.soft_delete_policy(s, tenant_id="acme", policy_id=theirs),
    ):
        with pytest.raises(NotFoundError), sessions.begin() as session:
            write(session)
    with sessions.begin() as session:
        changes = session.scalars(select(EntityChange)).all()
        assert {(c.tenant_id, c.entity_id) for c in changes} == {
            ("acme", str(mine)),
            ("globex", str(theirs)),
        }


def test_large_content_and_odd_unicode_round_trip(
    sessions: sessionmaker[Session], tenant: str
) -> None:
    content = ("policy \u00e9\u4e2d\U0001f512 \u202e rtl \ufeff \u200d " * 40000)[:1_000_000]
    title = "Z\u0301alg\u00f6 \u2028 title \U0001f9ea"
    pid = _create(sessions, title=title, content=content, custom_fields={"\u00fcml": ["\u2603"]})
    with sessions.begin() as session:
        policy = svc.get_policy(session, tenant_id=tenant, policy_id=pid)
        assert policy.content == content and policy.title == title
        assert policy.custom_fields == {"\u00fcml": ["\u2603"]}
