"""The governed state at a moment, in one read, and what an operator must hear about it: the
four checks (no unresolved failed executions, no overdue approvals, change lag within the
threshold, no failed email), each with a sentence that says what is wrong and what to do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.config import Settings
from gov_pipeline.services.emails import Outbox, outbox
from gov_pipeline.services.governance import (
    ChangeBacklog,
    Outcomes,
    RegisterRow,
    WaitingStep,
    approval_backlog,
    change_backlog,
    policy_register,
    workflow_outcomes,
)

NO_FAILED = "no_unresolved_failed_executions"
NO_OVERDUE = "no_overdue_approvals"
LAG_OK = "change_lag_under_threshold"
NO_FAILED_EMAILS = "no_failed_emails"


@dataclass(frozen=True)
class GovernanceState:
    """What the four governance assets show."""

    at: datetime
    register: list[RegisterRow]
    backlog: list[WaitingStep]
    outcomes: Outcomes
    changes: ChangeBacklog
    lag_threshold_s: int
    emails: Outbox

    @property
    def overdue(self) -> list[WaitingStep]:
        return [s for s in self.backlog if s.overdue]

    @property
    def change_lag_s(self) -> float:
        return self.changes.oldest_age_s(self.at)


def read_governance_state(
    sessions: sessionmaker[Session], settings: Settings, now: datetime, changes_after: int = 0
) -> GovernanceState:
    """Read it all in one transaction (`changes_after`: where the last read found every
    change processed, see services/governance.py change_backlog)."""
    with sessions.begin() as session:
        return GovernanceState(
            at=now,
            register=policy_register(session),
            backlog=approval_backlog(session, now),
            outcomes=workflow_outcomes(session, now, timedelta(hours=settings.outcomes_window_h)),
            changes=change_backlog(session, after=changes_after),
            lag_threshold_s=settings.change_lag_threshold_s,
            emails=outbox(session, since=now - timedelta(hours=settings.outcomes_window_h)),
        )


@dataclass(frozen=True)
class Verdict:
    """One check: passed or not, the sentence for the operator, and the figure it judged
    (plotted on the check's page)."""

    check: str
    passed: bool
    sentence: str
    figure: tuple[str, float]


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def failed_verdict(state: GovernanceState) -> Verdict:
    failed = state.outcomes.failed
    figure = ("unresolved_failed", float(state.outcomes.failed_total))
    if not failed:
        return Verdict(NO_FAILED, True, "No execution is failed and unresolved.", figure)
    first = failed[0]
    return Verdict(
        NO_FAILED,
        False,
        f"{state.outcomes.failed_total} execution(s) failed and are not resolved; the latest, "
        f"execution {first.execution_id} ({first.workflow} on {first.entity}, tenant "
        f"{first.tenant_id}): {first.reason}. Fix the cause, then retry them (the "
        "retry_executions job, or gov-pipeline executions retry) or cancel them.",
        figure,
    )


def overdue_verdict(state: GovernanceState) -> Verdict:
    overdue = state.overdue
    figure = ("overdue_steps", float(len(overdue)))
    if not overdue:
        waiting = len(state.backlog)
        sentence = f"No approval step is past its due time ({waiting} wait)."
        return Verdict(NO_OVERDUE, True, sentence, figure)
    oldest = max(overdue, key=lambda s: s.age_s)
    return Verdict(
        NO_OVERDUE,
        False,
        f"{len(overdue)} approval step(s) are past their due time; the oldest, approval "
        f"{oldest.approval_id} ({oldest.step} of {oldest.workflow} on {oldest.entity}, tenant "
        f"{oldest.tenant_id}), has waited {_hours(oldest.age_s)} for {oldest.approvers}. "
        "Decide them (the decide_approval job) or escalate.",
        figure,
    )


def lag_verdict(state: GovernanceState) -> Verdict:
    lag, limit = state.change_lag_s, state.lag_threshold_s
    pending = state.changes.unprocessed
    figure = ("oldest_change_age_s", round(lag, 1))
    if lag <= limit:
        return Verdict(
            LAG_OK,
            True,
            f"{pending} change(s) wait; the oldest for {lag:.0f} s (threshold {limit} s).",
            figure,
        )
    return Verdict(
        LAG_OK,
        False,
        f"{pending} change(s) are not processed; the oldest has waited {lag:.0f} s, over the "
        f"{limit} s threshold. Check that the daemon and the workers run "
        "(gov-pipeline queue status) and look for failed process_changes runs.",
        figure,
    )


def emails_verdict(state: GovernanceState) -> Verdict:
    failed = state.emails.failed_since
    figure = ("failed_emails", float(failed))
    if not failed:
        pending = state.emails.by_status.get("pending", 0)
        sentence = f"No email failed in the outcomes window ({pending} wait to be sent)."
        return Verdict(NO_FAILED_EMAILS, True, sentence, figure)
    latest = state.emails.failed[0]
    return Verdict(
        NO_FAILED_EMAILS,
        False,
        f"{failed} email(s) failed for good in the outcomes window; the latest, email "
        f"{latest.id} to user {latest.user_id} (tenant {latest.tenant_id}): "
        f"{latest.last_error}. Fix the cause "
        "(the SMTP server, GOV_PIPELINE_SMTP_*, the user's address), then resend them: "
        f"gov-pipeline notifications resend-emails -t {latest.tenant_id} --all-failed.",
        figure,
    )
