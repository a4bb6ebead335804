"""Send the email outbox: lease a due email, talk SMTP outside any transaction, record.

Safe with several senders at once (the `deliver_emails` runs, a CLI resend): an email is
leased by a conditional update before it is sent, so only one sender has it at a time.
An email whose attempts run out ends `failed` with the last error; its notification and
execution are not touched (the in-app notification was written; the email is its copy).
A sender that dies after the server accepted a message but before recording it sends it
again once its lease has passed (the Message-ID is the same, so a receiver can drop it).
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from gov_pipeline.db.models import EmailDelivery
from gov_pipeline.domain.emails import (
    NOTIFICATION_LANE_RETRY_DELAY_S,
    SEND_LEASE_S,
    SMTP_TIMEOUT_S,
    SmtpSettings,
    SmtpTls,
    message_id,
)
from gov_pipeline.domain.statuses import EmailStatus
from gov_pipeline.services.emails import due_emails, next_due, record_attempt


@dataclass
class EmailStats:
    attempts: int = 0
    sent: int = 0
    failed: dict[int, str | None] = field(default_factory=dict)  # ran out here: id -> error

    def add(self, other: EmailStats) -> None:
        self.attempts += other.attempts
        self.sent += other.sent
        self.failed.update(other.failed)


def compose(delivery: EmailDelivery, smtp: SmtpSettings) -> EmailMessage:
    """The message of `delivery`, from `smtp.sender`.

    Raises:
        ValueError: a header value holds a line break (it is never sent half-formed).
    """
    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = delivery.to_address
    message["Subject"] = delivery.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(delivery.id, smtp.sender)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to us
    message.set_content(delivery.body)
    return message


def _connect(smtp: SmtpSettings) -> smtplib.SMTP:
    if smtp.tls == SmtpTls.SSL:
        context = ssl.create_default_context()
        return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=SMTP_TIMEOUT_S, context=context)
    client = smtplib.SMTP(smtp.host, smtp.port, timeout=SMTP_TIMEOUT_S)
    if smtp.tls == SmtpTls.STARTTLS:
        try:
            # Refused, not sent in clear, when the server offers no STARTTLS.
            client.starttls(context=ssl.create_default_context())
        except BaseException:
            client.close()
            raise
    return client


def send_once(delivery: EmailDelivery, smtp: SmtpSettings) -> str | None:
    """One SMTP attempt at `delivery`; returns None when the server accepted it, else the
    error (never the password). Never raises for a network, TLS or SMTP failure."""
    try:
        message = compose(delivery, smtp)
        client = _connect(smtp)
    except (smtplib.SMTPException, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        if smtp.user and smtp.password:
            client.login(smtp.user, smtp.password)
        client.send_message(
            message, from_addr=parseaddr(smtp.sender)[1], to_addrs=[delivery.to_address]
        )
    except (smtplib.SMTPException, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        try:
            client.quit()  # accepted is accepted: a failing QUIT does not make it unsent
        except (smtplib.SMTPException, OSError):
            client.close()
    return None


def _lease(sessions: sessionmaker[Session], email_id: int) -> bool:
    """Hold a due email for one attempt, so two senders never send it at once."""
    now = datetime.now(UTC)
    with sessions.begin() as session:
        result = session.execute(
            update(EmailDelivery)
            .where(
                EmailDelivery.id == email_id,
                EmailDelivery.status == EmailStatus.PENDING,
                EmailDelivery.next_attempt_at.is_(None) | (EmailDelivery.next_attempt_at <= now),
            )
            .values(next_attempt_at=now + timedelta(seconds=SEND_LEASE_S))
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def send_due(
    sessions: sessionmaker[Session],
    smtp: SmtpSettings,
    *,
    ids: Sequence[int] | None = None,
    limit: int = 100,
    retry_delay_s: float = NOTIFICATION_LANE_RETRY_DELAY_S,
) -> EmailStats:
    """One attempt at each email due now (of `ids`, when given)."""
    stats = EmailStats()
    with sessions.begin() as session:
        due = [d.id for d in due_emails(session, limit, ids)]
    for email_id in due:
        if not _lease(sessions, email_id):
            continue  # another sender has it
        with sessions.begin() as session:
            delivery = session.get(EmailDelivery, email_id)
            assert delivery is not None  # leased above; emails are never deleted
            session.expunge(delivery)
        error = send_once(delivery, smtp)  # no transaction held while talking SMTP
        stats.attempts += 1
        with sessions.begin() as session:
            delivery = session.get(EmailDelivery, email_id, with_for_update=True)
            assert delivery is not None
            status = record_attempt(delivery, error, retry_delay_s)
        if status == EmailStatus.SENT:
            stats.sent += 1
        elif status == EmailStatus.FAILED:  # (record_attempt logged it)
            stats.failed[email_id] = error
    return stats


def send_pending(
    sessions: sessionmaker[Session],
    smtp: SmtpSettings,
    *,
    ids: Sequence[int] | None = None,
    deadline_s: float = 600.0,
    sleep: Callable[[float], None] = time.sleep,
    retry_delay_s: float = NOTIFICATION_LANE_RETRY_DELAY_S,
) -> EmailStats:
    """Send until nothing is pending (of `ids`, when given): each email ends sent or
    failed, or `deadline_s` passes (what is left waits for the next sender)."""
    total = EmailStats()
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        with sessions.begin() as session:
            pending, when = next_due(session, ids)
        if not pending:
            break
        wait = 0.0 if when is None else (when - datetime.now(UTC)).total_seconds()
        if wait > 0:
            sleep(min(wait, 1.0))
            continue
        total.add(send_due(sessions, smtp, ids=ids, retry_delay_s=retry_delay_s))
    return total


def pending_emails(sessions: sessionmaker[Session]) -> int:
    """How many emails wait to be sent (for the schedule's skip reason)."""
    with sessions.begin() as session:
        return next_due(session)[0]
