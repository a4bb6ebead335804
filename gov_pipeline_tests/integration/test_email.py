"""Email of notifications against a real SMTP server on loopback (aiosmtpd), on both
databases: a workflow's notify queues the email with the notification, the sender delivers
it, a server that is down costs ten attempts and ends in a visible failure, two senders at
once send each email once, and without SMTP settings nothing is queued."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.checks.verify import verify
from gov_pipeline.config import Settings
from gov_pipeline.db.engine import make_sessionmaker
from gov_pipeline.db.integrity import ALL_TENANTS
from gov_pipeline.db.models import EmailDelivery, Notification
from gov_pipeline.domain.emails import SmtpSettings
from gov_pipeline.embedded.smtp_receiver import Inbox, smtp_receiver
from gov_pipeline.orchestration.emails import deliver_emails, deliver_emails_schedule
from gov_pipeline.orchestration.resources import DatabaseResource
from gov_pipeline.runners.emails import send_due, send_pending
from gov_pipeline.runners.governance import emails_verdict, read_governance_state
from gov_pipeline.services import notifications
from gov_pipeline.services.executions import describe_execution
from gov_pipeline.services.tenants import upsert_user
from gov_pipeline_tests.integration.engine_support import (
    apply_yaml,
    cli_invoker,
    count,
    make_settings,
    move,
    new_policy,
    process,
)

NOTICE = """
name: review notice
tenant_id: acme
type: notification
trigger: on_status_change
conditions: {field: new.status, op: changed_to, value: in_review}
actions:
  - type: notify
    users: [olivia, carol, ivan]
    title: "Review due: {entity.title}"
    message: Please review the policy before Friday.
"""


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_receiver() as served:
        yield served


@pytest.fixture
def people(sessions: sessionmaker[Session], tenant: str) -> None:
    """olivia has an address, carol has none, ivan has one but is inactive."""
    with sessions.begin() as session:
        upsert_user(session, tenant_id="acme", user_id="olivia", email="olivia@example.com",
                    roles=["policy_owner"])  # fmt: skip
        upsert_user(session, tenant_id="acme", user_id="carol", roles=["compliance_officer"])
        upsert_user(session, tenant_id="acme", user_id="ivan", email="ivan@example.com")
        upsert_user(session, tenant_id="acme", user_id="ivan").active = False


@pytest.fixture
def mailing(app_engine: Engine) -> sessionmaker[Session]:
    """The sessions of a process with SMTP settings: notifications queue their email."""
    return make_sessionmaker(app_engine, tenant=ALL_TENANTS, queue_emails=True)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens there once the probe is closed


def _emails(sessions: sessionmaker[Session]) -> list[EmailDelivery]:
    with sessions.begin() as session:
        return list(session.scalars(select(EmailDelivery).order_by(EmailDelivery.id)))


def _notify_olivia(mailing: sessionmaker[Session], settings: Settings) -> int:
    """The workflow's notify for a policy moved to review; returns the policy id."""
    apply_yaml(mailing, NOTICE)
    pid = new_policy(mailing, title="Access control")
    move(mailing, pid, "in_review")
    process(mailing, settings)
    return pid


def test_a_notify_is_emailed_to_the_users_with_an_address(
    db_url: str, mailing: sessionmaker[Session], people: None, inbox: Inbox
) -> None:
    settings = make_settings(db_url, **inbox.env("Gov Pipeline <gov@example.com>"))
    assert settings.smtp is not None
    pid = _notify_olivia(mailing, settings)
    assert count(mailing, Notification) == 3  # in-app: all three
    (queued,) = _emails(mailing)  # email: only the active user with an address
    assert (queued.user_id, queued.to_address, queued.status, queued.attempts) == (
        "olivia", "olivia@example.com", "pending", 0,
    )  # fmt: skip
    assert queued.subject == "Review due: Access control" and queued.max_attempts == 10
    assert inbox.received() == []  # queued with the notification, sent afterwards

    stats = send_pending(mailing, settings.smtp)
    assert (stats.attempts, stats.sent, stats.failed) == (1, 1, {})
    (mail,) = inbox.wait_for(1)
    assert mail.rcpt_tos == ["olivia@example.com"] and mail.mail_from == "gov@example.com"
    assert mail.to == "olivia@example.com" and mail.subject == "Review due: Access control"
    assert str(mail.message["From"]) == "Gov Pipeline <gov@example.com>"
    assert mail.message["Message-ID"] == f"<gov-pipeline.email.{queued.id}@example.com>"
    assert "Please review the policy before Friday." in mail.body
    assert f"About: policy {pid} (tenant acme)" in mail.body
    assert f"Sent by workflow 'review notice' (version 1), execution {queued.execution_id}." in (
        mail.body
    )
    (sent,) = _emails(mailing)
    assert sent.status == "sent" and sent.sent_at is not None and sent.attempts == 1
    assert send_pending(mailing, settings.smtp).attempts == 0  # nothing left: sent once
    assert len(inbox.received()) == 1


def test_a_server_that_is_down_costs_ten_attempts_then_the_email_fails_visibly(
    db_url: str,
    mailing: sessionmaker[Session],
    people: None,
    inbox: Inbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    down = {**inbox.env(), "GOV_PIPELINE_SMTP_PORT": str(_closed_port())}
    settings = make_settings(db_url, **down)
    assert settings.smtp is not None
    _notify_olivia(mailing, settings)

    first = send_due(mailing, settings.smtp)  # the lane's rule: the next try 1 s later
    (email,) = _emails(mailing)
    assert first.attempts == 1 and email.status == "pending" and email.attempts == 1
    assert "ConnectionRefusedError" in (email.last_error or "")
    assert email.next_attempt_at is not None
    wait = (email.next_attempt_at.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()
    assert 0.5 < wait <= 1.0

    rest = send_pending(mailing, settings.smtp, retry_delay_s=0.01)
    (email,) = _emails(mailing)
    assert rest.attempts == 9 and list(rest.failed) == [email.id]
    assert email.status == "failed" and email.attempts == 10 and email.sent_at is None
    assert "ConnectionRefusedError" in (email.last_error or "")

    with mailing.begin() as session:
        shown = describe_execution(session, "acme", email.execution_id or 0)
        figures = verify(session).figures
    assert [(e["id"], e["status"]) for e in shown["email_deliveries"]] == [(email.id, "failed")]
    assert figures["email_deliveries_by_status"] == {"failed": 1}
    verdict = emails_verdict(read_governance_state(mailing, settings, datetime.now(UTC)))
    assert not verdict.passed and verdict.figure == ("failed_emails", 1.0)
    assert f"email {email.id} to user olivia (tenant acme): ConnectionRefusedError" in (
        verdict.sentence
    )

    for key, value in {"GOV_PIPELINE_DATABASE_URL": db_url, "GOV_PIPELINE_TENANT": "acme",
                       **down}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    invoke = cli_invoker(capsys)
    code, out, _ = invoke("executions", "show", str(email.execution_id))
    assert code == 0
    assert f"email {email.id} to olivia <olivia@example.com>: failed after 10 attempt(s)" in out
    code, out, _ = invoke("notifications", "emails", "--status", "failed")
    assert code == 0 and "olivia <olivia@example.com>" in out and "ConnectionRefusedErr" in out
    code, out, _ = invoke("verify", "--no-dagster", "--grace", "0")
    assert "emails by status {'failed': 1}" in out

    # The server is back: the operator resends, here at once.
    for key, value in inbox.env().items():
        monkeypatch.setenv(key, value)
    code, out, err = invoke("notifications", "resend-emails", "--all-failed")
    assert (code, err) == (0, "") and "resent 1 email(s): 1 sent, 0 failed" in out
    (mail,) = inbox.wait_for(1)
    assert mail.to == "olivia@example.com" and mail.subject == "Review due: Access control"
    assert [(e.status, e.attempts) for e in _emails(mailing)] == [("sent", 1)]
    code, _, err = invoke("notifications", "resend-emails", str(email.id))
    assert code == 1 and f"email {email.id} was sent at" in err


def test_starttls_to_a_server_without_it_fails_and_nothing_goes_out_in_clear(
    db_url: str, mailing: sessionmaker[Session], people: None, inbox: Inbox
) -> None:
    settings = make_settings(db_url, **{**inbox.env(), "GOV_PIPELINE_SMTP_TLS": "starttls"})
    assert settings.smtp is not None
    _notify_olivia(mailing, settings)
    assert send_due(mailing, settings.smtp).attempts == 1
    (email,) = _emails(mailing)
    assert email.status == "pending" and email.attempts == 1
    assert (email.last_error or "").startswith("SMTPNotSupportedError: STARTTLS")
    assert inbox.received() == []


def test_two_senders_at_once_send_each_email_once(
    db_url: str, mailing: sessionmaker[Session], tenant: str, inbox: Inbox
) -> None:
    settings = make_settings(db_url, **inbox.env())
    assert settings.smtp is not None
    users = [f"user{i:02d}" for i in range(24)]
    with mailing.begin() as session:
        for user in users:
            upsert_user(session, tenant_id="acme", user_id=user, email=f"{user}@example.com")
        notifications.send(session, tenant_id="acme", recipients=users, type="general",
                           title="Quarterly attestation", message="Attest by Monday.")  # fmt: skip
    smtp: SmtpSettings = settings.smtp
    results: list[Any] = []
    start = threading.Barrier(2)

    def sender() -> None:
        start.wait()
        results.append(send_pending(mailing, smtp))

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 2
    received = inbox.wait_for(24)
    assert sorted(m.to for m in received) == [f"{u}@example.com" for u in users]  # once each
    assert sum(r.sent for r in results) == 24 and sum(r.attempts for r in results) == 24
    assert {(e.status, e.attempts) for e in _emails(mailing)} == {("sent", 1)}


def test_without_smtp_settings_no_email_is_queued(
    db_url: str, sessions: sessionmaker[Session], people: None
) -> None:
    settings = make_settings(db_url)
    assert settings.smtp is None
    apply_yaml(sessions, NOTICE)
    pid = new_policy(sessions)
    move(sessions, pid, "in_review")
    process(sessions, settings)
    assert count(sessions, Notification) == 3
    assert count(sessions, EmailDelivery) == 0
    # The Dagster resource's sessions follow its process's settings (no SMTP here).
    database = DatabaseResource(url=db_url)
    with database.sessions().begin() as session:
        notifications.send(session, tenant_id="acme", recipients=["olivia"], type="general",
                           title="Hello")  # fmt: skip
    assert count(sessions, EmailDelivery) == 0


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # loopback only
def test_a_login_is_used_and_its_password_is_shown_nowhere(
    db_url: str,
    mailing: sessionmaker[Session],
    people: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "smtp-sentinel-5d1e77"
    with smtp_receiver(login=("bot", password)) as inbox:
        env = {**inbox.env(), "GOV_PIPELINE_SMTP_USER": "bot"}
        right = make_settings(db_url, **env, GOV_PIPELINE_SMTP_PASSWORD=password)
        wrong = make_settings(db_url, **env, GOV_PIPELINE_SMTP_PASSWORD=password[::-1])
        assert right.smtp is not None and wrong.smtp is not None
        _notify_olivia(mailing, right)
        with caplog.at_level(logging.DEBUG):
            refused = send_due(mailing, wrong.smtp)
            sent = send_pending(mailing, right.smtp, retry_delay_s=0.01)
        assert refused.attempts == 1 and sent.sent == 1
        assert inbox.logins == ["bot"] and len(inbox.wait_for(1)) == 1
    (email,) = _emails(mailing)
    assert email.status == "sent" and email.attempts == 2
    assert "SMTPAuthenticationError" in caplog.text
    for text in (caplog.text, repr(right), repr(email.__dict__)):
        assert password not in text and password[::-1] not in text


def test_the_deliver_emails_job_runs_in_the_notification_lane_from_its_schedule(
    db_url: str,
    mailing: sessionmaker[Session],
    people: None,
    inbox: Inbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in inbox.env().items():
        monkeypatch.setenv(key, value)
    from gov_pipeline.definitions import defs  # the composition root registers both

    database = DatabaseResource(url=db_url)
    repo = defs.get_repository_def()
    assert "deliver_emails" in {j.name for j in repo.get_all_jobs()}
    assert repo.get_schedule_def("deliver_emails_every_minute").job_name == "deliver_emails"
    with dg.build_schedule_context(resources={"database": database}) as context:
        idle = deliver_emails_schedule(context)
    assert (
        isinstance(idle, dg.SkipReason) and idle.skip_message == "No email is waiting to be sent."
    )

    settings = make_settings(db_url, **inbox.env())
    _notify_olivia(database.sessions(), settings)  # the resource's sessions queue emails here
    with dg.build_schedule_context(resources={"database": database}) as context:
        assert isinstance(deliver_emails_schedule(context), dg.RunRequest)
    with dg.instance_for_test() as instance:
        result = deliver_emails.execute_in_process(
            resources={"database": database}, instance=instance
        )
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.tags["gov/queue"] == "notification"
    (metadata,) = [
        e.event_specific_data.metadata  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type_value == "STEP_OUTPUT" and e.step_key == "send_emails"
    ]
    assert (metadata["sent"].value, metadata["failed"].value) == (1, 0)
    (mail,) = inbox.wait_for(1)
    assert mail.to == "olivia@example.com" and mail.subject == "Review due: Access control"
    assert [e.status for e in _emails(mailing)] == ["sent"]
