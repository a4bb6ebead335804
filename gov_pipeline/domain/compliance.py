"""The compliance report's figures, computed from facts read at one moment: policies by
status, overdue reviews, approval turnaround (median and 90th percentile, in hours) and SLA
breaches. Pure, so every figure can be checked against data whose answer is known."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from gov_pipeline.domain.statuses import (
    OPEN_APPROVAL_STATUSES,
    ApprovalStatus,
    EntityType,
    PolicyStatus,
    RiskStatus,
)

# The records whose reviews are tracked, and the statuses that end the need for one.
REVIEW_CLOSED: dict[str, frozenset[str]] = {
    EntityType.POLICY: frozenset({PolicyStatus.ARCHIVED}),
    EntityType.SOP: frozenset({PolicyStatus.ARCHIVED}),
    EntityType.RISK: frozenset({RiskStatus.CLOSED}),
}
# The outcomes of a step someone decided (skipped and withdrawn steps were never decided).
DECIDED_APPROVAL_STATUSES = frozenset(
    {ApprovalStatus.APPROVED, ApprovalStatus.REJECTED, ApprovalStatus.CHANGES_REQUESTED}
)
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class ReviewDue:
    """A record with a review date, as read."""

    tenant_id: str
    entity_type: str
    entity_id: int
    title: str
    status: str
    next_review_date: date


@dataclass(frozen=True)
class ApprovalTimes:
    """An approval step's times: `asked_at` is when it was requested (else created)."""

    tenant_id: str
    approval_id: int
    status: str
    asked_at: datetime
    decided_at: datetime | None
    due_at: datetime | None


@dataclass(frozen=True)
class ComplianceFacts:
    """What the report is computed from: live policies counted by (tenant, status), records
    whose review may be overdue, and approval steps decided or open with a due time."""

    policy_counts: list[tuple[str, str, int]]
    reviews: list[ReviewDue]
    approvals: list[ApprovalTimes]


@dataclass(frozen=True)
class OverdueReview:
    review: ReviewDue
    days_overdue: int


@dataclass(frozen=True)
class Turnaround:
    """Hours from request to decision of the steps decided by the report's time."""

    decided: int
    median_h: float | None
    p90_h: float | None


@dataclass(frozen=True)
class SlaBreaches:
    decided_late: int  # decided after their due time
    open_past_due: int  # still open, due before the report's time

    @property
    def total(self) -> int:
        return self.decided_late + self.open_past_due


def percentile(values: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1) of `values`, linear between the closest ranks: numpy's
    default, and `statistics.quantiles(..., method="inclusive")`.

    Raises:
        ValueError: no values, or `q` outside [0, 1].
    """
    if not values or not 0.0 <= q <= 1.0:
        raise ValueError(f"percentile of {len(values)} value(s) at q={q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass(frozen=True)
class Figures:
    """The report's figures over one set of facts (all of the report's, or one tenant's)."""

    policies_by_status: dict[str, int]
    overdue_reviews: list[OverdueReview]
    turnaround: Turnaround
    sla: SlaBreaches

    @property
    def policies(self) -> int:
        return sum(self.policies_by_status.values())

    def overdue_by_type(self) -> dict[str, int]:
        counts = {str(t): 0 for t in REVIEW_CLOSED}
        for item in self.overdue_reviews:
            counts[item.review.entity_type] = counts.get(item.review.entity_type, 0) + 1
        return counts


def _overdue(reviews: Iterable[ReviewDue], today: date) -> list[OverdueReview]:
    found = [
        OverdueReview(r, (today - r.next_review_date).days)
        for r in reviews
        if r.next_review_date < today
        and r.status not in REVIEW_CLOSED.get(r.entity_type, frozenset())
    ]
    return sorted(found, key=lambda o: (o.review.next_review_date, o.review.entity_type,
                                        o.review.entity_id))  # fmt: skip


def _turnaround(approvals: Iterable[ApprovalTimes], as_of: datetime) -> Turnaround:
    hours = [
        max(0.0, (_utc(a.decided_at) - _utc(a.asked_at)).total_seconds()) / SECONDS_PER_HOUR
        for a in approvals
        if a.status in DECIDED_APPROVAL_STATUSES
        and a.decided_at is not None
        and _utc(a.decided_at) <= as_of
    ]
    if not hours:
        return Turnaround(0, None, None)
    return Turnaround(len(hours), percentile(hours, 0.5), percentile(hours, 0.9))


def _sla(approvals: Iterable[ApprovalTimes], as_of: datetime) -> SlaBreaches:
    late = past_due = 0
    for a in approvals:
        if a.due_at is None:
            continue
        due = _utc(a.due_at)
        if a.status in DECIDED_APPROVAL_STATUSES and a.decided_at is not None:
            decided = _utc(a.decided_at)
            if due < decided <= as_of:
                late += 1
        elif a.status in OPEN_APPROVAL_STATUSES and due < as_of:
            past_due += 1
    return SlaBreaches(late, past_due)


def figures(facts: ComplianceFacts, as_of: datetime) -> Figures:
    """The figures of `facts` at `as_of` (aware): reviews are overdue when their date is
    before `as_of`'s day (UTC); only decisions made by `as_of` count."""
    as_of = _utc(as_of)
    by_status = {str(s): 0 for s in PolicyStatus}
    for _, status, n in facts.policy_counts:
        by_status[status] = by_status.get(status, 0) + n
    return Figures(
        policies_by_status=by_status,
        overdue_reviews=_overdue(facts.reviews, as_of.astimezone(UTC).date()),
        turnaround=_turnaround(facts.approvals, as_of),
        sla=_sla(facts.approvals, as_of),
    )


def _of_tenant(facts: ComplianceFacts, tenant_id: str) -> ComplianceFacts:
    return ComplianceFacts(
        [c for c in facts.policy_counts if c[0] == tenant_id],
        [r for r in facts.reviews if r.tenant_id == tenant_id],
        [a for a in facts.approvals if a.tenant_id == tenant_id],
    )


@dataclass(frozen=True)
class ComplianceReport:
    """The figures of one tenant (`tenant_id`) or of all (None), with each tenant's own."""

    tenant_id: str | None
    as_of: datetime
    totals: Figures
    by_tenant: dict[str, Figures]

    @property
    def scope(self) -> str:
        return self.tenant_id or "all tenants"

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON holds it."""
        return {
            "tenant_id": self.tenant_id,
            "scope": self.scope,
            "as_of": self.as_of.isoformat(),
            **figures_dict(self.totals),
            "by_tenant": {t: figures_dict(f, items=False) for t, f in self.by_tenant.items()},
        }


def _hours(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def overdue_items(f: Figures) -> list[dict[str, Any]]:
    """The overdue reviews as rows, oldest review date first (`record`: `policy 12`)."""
    return [
        {"tenant_id": o.review.tenant_id, "record": f"{o.review.entity_type} {o.review.entity_id}",
         "entity_type": o.review.entity_type, "entity_id": o.review.entity_id,
         "title": o.review.title, "status": o.review.status,
         "next_review_date": o.review.next_review_date.isoformat(),
         "days_overdue": o.days_overdue}
        for o in f.overdue_reviews
    ]  # fmt: skip


def figures_dict(f: Figures, *, items: bool = True) -> dict[str, Any]:
    """`f` as JSON holds it (`items`: with the list of overdue reviews)."""
    overdue: dict[str, Any] = {
        "total": len(f.overdue_reviews),
        "by_entity_type": f.overdue_by_type(),
    }
    if items:
        overdue["items"] = overdue_items(f)
    return {
        "policies": f.policies,
        "policies_by_status": f.policies_by_status,
        "overdue_reviews": overdue,
        "approval_turnaround_hours": {
            "decided": f.turnaround.decided,
            "median": _hours(f.turnaround.median_h),
            "p90": _hours(f.turnaround.p90_h),
        },
        "sla_breaches": {
            "total": f.sla.total,
            "decided_late": f.sla.decided_late,
            "open_past_due": f.sla.open_past_due,
        },
    }


def compute_report(
    facts: ComplianceFacts, *, as_of: datetime, tenant_id: str | None = None
) -> ComplianceReport:
    """The report of `facts` (read for `tenant_id`, or all tenants) at `as_of`."""
    tenants = sorted(
        {c[0] for c in facts.policy_counts}
        | {r.tenant_id for r in facts.reviews}
        | {a.tenant_id for a in facts.approvals}
    )
    return ComplianceReport(
        tenant_id=tenant_id,
        as_of=_utc(as_of),
        totals=figures(facts, as_of),
        by_tenant={t: figures(_of_tenant(facts, t), as_of) for t in tenants},
    )


def figure_rows(report: ComplianceReport) -> list[tuple[str, str]]:
    """(figure, value) of the report's totals, in reading order (the CLI's and the asset's
    table)."""
    f = report.totals

    def h(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    return [
        ("policies", str(f.policies)),
        *((f"policies {s}", str(n)) for s, n in f.policies_by_status.items()),
        ("overdue reviews", str(len(f.overdue_reviews))),
        *((f"overdue reviews {t}", str(n)) for t, n in f.overdue_by_type().items()),
        ("approvals decided", str(f.turnaround.decided)),
        ("turnaround median (h)", h(f.turnaround.median_h)),
        ("turnaround p90 (h)", h(f.turnaround.p90_h)),
        ("SLA breaches", str(f.sla.total)),
        ("SLA decided late", str(f.sla.decided_late)),
        ("SLA open past due", str(f.sla.open_past_due)),
    ]
