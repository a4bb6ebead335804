"""The review-cycle definitions (domain/reviews.py) and what db/reviews.py generates from
them: which types have a cycle, the SQLite interval against the calendar, and the refusals
the triggers word as the services read them."""

from __future__ import annotations

import calendar
import re
import sqlite3
from datetime import date, timedelta

import pytest

from gov_pipeline.db import reviews as db_reviews
from gov_pipeline.domain.entities import KINDS
from gov_pipeline.domain.reviews import (
    REVIEW_INTERVAL_MONTHS,
    dated_on_entering,
    reviewable_text,
    reviewed_kinds,
)
from gov_pipeline.domain.statuses import EntityType, ReviewFrequency


def plus_months(day: date, months: int) -> date:
    """The calendar's answer, capped at the month's last day (31 Jan + 1 month = 28/29 Feb)."""
    years, month0 = divmod(day.month - 1 + months, 12)
    year, month = day.year + years, month0 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def test_the_types_with_a_review_frequency_are_those_with_a_review_cycle() -> None:
    with_frequency = {t for t, k in KINDS.items() if "review_frequency" in k.columns}
    assert {k.entity_type for k in reviewed_kinds()} == with_frequency
    assert with_frequency == {EntityType.POLICY, EntityType.SOP, EntityType.RISK}
    for kind in reviewed_kinds():
        assert kind.reviewable <= set(kind.lifecycle.statuses)
        assert "next_review_date" in kind.columns and kind.deadline_field == "next_review_date"
    assert set(REVIEW_INTERVAL_MONTHS) == set(ReviewFrequency)


def test_a_publication_dates_the_stamp_and_the_next_review() -> None:
    policy, risk = KINDS[EntityType.POLICY], KINDS[EntityType.RISK]
    assert dated_on_entering(policy, "published") == ("published_date", "next_review_date")
    assert dated_on_entering(policy, "approved") == ()
    assert dated_on_entering(risk, "closed") == ()
    assert reviewable_text(policy) == "policy reviews need status published"
    assert reviewable_text(risk) == (
        "risk reviews need status identified, assessed, mitigating, accepted or monitored"
    )


def test_the_sqlite_interval_is_the_calendars_every_day_of_two_years() -> None:
    """31 January + 1 month is 28 February, 29 February + 1 year is 28 February: SQLite
    itself would carry the day over into March."""
    days = [date(2027, 1, 1) + timedelta(days=n) for n in range(731)]
    conn = sqlite3.connect(":memory:")
    try:
        for frequency, months in REVIEW_INTERVAL_MONTHS.items():
            expression = db_reviews.next_review_sql_sqlite("?", "?")
            for day in days:
                got = conn.execute(
                    f"SELECT {expression}",
                    [frequency] + [day.isoformat()] * (expression.count("?") - 1),
                ).fetchone()[0]
                expected = None if months is None else plus_months(day, months).isoformat()
                assert got == expected, (frequency, day)
    finally:
        conn.close()


def _sqlite_messages() -> list[str]:
    return re.findall(r"RAISE\(ABORT, '((?:[^']|'')*)'\)", db_reviews._sqlite_review_checks())


@pytest.mark.parametrize(
    ("message", "reason", "status"),
    [
        ("review: 'task' has no review cycle (one of: policy, risk, sop)", "no_cycle", None),
        ("review: policy 7 not found in tenant 'acme'", "not_found", None),
        ("review: SOP 2 is deleted", "deleted", None),
        ("review: risk 3 is closed; risk reviews need status identified", "status", "closed"),
        ("review: reviewed_by is required", "reviewer", None),
    ],
)
def test_the_postgres_refusals_are_read_back(message: str, reason: str, status: str | None) -> None:
    refusal = db_reviews.review_refusal(f"{message}\nCONTEXT:  PL/pgSQL function")
    assert refusal is not None and (refusal.reason, refusal.status) == (reason, status)


def test_every_sqlite_refusal_is_read_back_and_other_errors_are_not() -> None:
    messages = [m.replace("''", "'") for m in _sqlite_messages()]
    reasons = [db_reviews.review_refusal(m) for m in messages]
    assert None not in reasons
    found = {r.reason for r in reasons if r is not None}
    assert found == {"no_cycle", "reviewer", "not_found", "deleted", "status"}
    draft = db_reviews.review_refusal(
        "review: the policy is draft; policy reviews need status published"
    )
    assert draft is not None and (draft.status, draft.rule) == (
        "draft", "policy reviews need status published",
    )  # fmt: skip
    assert db_reviews.review_refusal("illegal status transition: draft -> published") is None
