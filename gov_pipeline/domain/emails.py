"""Email of notifications (pure): the SMTP settings' shape, the notification lane's retry
rule, and what a message says (subject, body, Message-ID, a usable address)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import parseaddr
from enum import StrEnum

from gov_pipeline.domain.lanes import lane_rule

# The notification lane's retry rule (domain/lanes.py: 10 attempts in all, a fixed 1 s apart).
NOTIFICATION_LANE_MAX_ATTEMPTS = lane_rule("notification").retry.max_attempts
NOTIFICATION_LANE_RETRY_DELAY_S = lane_rule("notification").retry.delay_s

# One SMTP conversation (connect, TLS, login, send) waits at most this long per step.
SMTP_TIMEOUT_S = 10.0
# How long a sender holds a delivery it is sending: longer than one attempt can take, so two
# senders never send the same message at once.
SEND_LEASE_S = 4 * SMTP_TIMEOUT_S + 5
SUBJECT_CHARS = 500  # the column's width

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SmtpTls(StrEnum):
    """How the connection to the SMTP server is protected."""

    NONE = "none"  # plain text: a relay on this host only, when there is a login
    STARTTLS = "starttls"  # plain connect, then STARTTLS (refused if the server lacks it)
    SSL = "ssl"  # TLS from the first byte (SMTPS, usually port 465)


DEFAULT_PORTS = {SmtpTls.NONE: 25, SmtpTls.STARTTLS: 25, SmtpTls.SSL: 465}


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how emails are sent; `password` never shows in a repr."""

    host: str
    sender: str  # the From header, `addr@host` or `Name <addr@host>`
    port: int = 25
    tls: SmtpTls = SmtpTls.STARTTLS
    user: str | None = None
    password: str | None = field(default=None, repr=False)


def address_problem(address: str) -> str | None:
    """Why `address` cannot be a recipient (None when it can): one `local@domain`, no name,
    no spaces or control characters (which would let a value inject a header)."""
    if _CONTROL.search(address) or " " in address:
        return f"not an email address (spaces or control characters): {address[:100]!r}"
    name, parsed = parseaddr(address)
    local, at, domain = parsed.rpartition("@")
    if name or parsed != address or not at or not local or "." not in domain.strip("."):
        return f"not an email address: {address[:100]!r}"
    return None


def sender_problem(sender: str) -> str | None:
    """Why `sender` cannot be the From header (None when it can): `addr` or `Name <addr>`,
    on one line."""
    if _CONTROL.search(sender):
        return f"a From header must be one line, got {sender[:100]!r}"
    address = parseaddr(sender)[1]
    return address_problem(address) if address else f"not an email address: {sender[:100]!r}"


def one_line(text: str, limit: int = SUBJECT_CHARS) -> str:
    """`text` on one line (newlines and runs of spaces become one space), cut to `limit`."""
    return " ".join(text.split())[:limit]


@dataclass(frozen=True)
class Origin:
    """What a notification is about and what wrote it, for the lines under its message."""

    tenant_id: str
    entity_type: str | None = None
    entity_id: str | None = None
    workflow: str | None = None
    workflow_version: int | None = None
    execution_id: int | None = None


def email_body(message: str, origin: Origin) -> str:
    """The message, then the record it is about and the workflow execution that wrote it."""
    lines = [message.strip(), ""] if message.strip() else []
    if origin.entity_type and origin.entity_id:
        lines.append(f"About: {origin.entity_type} {origin.entity_id} (tenant {origin.tenant_id})")
    if origin.execution_id is not None:
        by = (
            f"workflow {origin.workflow!r} (version {origin.workflow_version})"
            if origin.workflow
            else "a workflow"
        )
        lines.append(f"Sent by {by}, execution {origin.execution_id}.")
    else:
        lines.append("Sent by gov-pipeline.")
    return "\n".join(lines) + "\n"


def message_id(delivery_id: int, sender: str) -> str:
    """The same Message-ID at every attempt of a delivery, so a receiver can drop a copy."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "gov-pipeline.invalid"
    return f"<gov-pipeline.email.{delivery_id}@{domain}>"
