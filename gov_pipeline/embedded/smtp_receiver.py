"""A small SMTP server bound to 127.0.0.1 that keeps what it receives, for the demo and the
tests (aiosmtpd), and on its own (`python -m gov_pipeline.embedded.smtp_receiver --port
8025`) to watch the emails of a local setup. Point gov_pipeline at it with `env()`."""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from types import FrameType
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

RECEIVER_FROM = "gov-pipeline@localhost.localdomain"  # the From of env() (any address works)


@dataclass(frozen=True)
class ReceivedMail:
    """One message the server accepted: the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def to(self) -> str:
        return str(self.message["To"])

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        return "" if part is None else str(cast(EmailMessage, part).get_content())


@dataclass
class Inbox:
    """What the server received, in order, and the users that logged in."""

    host: str
    port: int
    messages: list[ReceivedMail] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def env(self, sender: str = RECEIVER_FROM) -> dict[str, str]:
        """The GOV_PIPELINE_SMTP_* variables that send to this server (no TLS, no login)."""
        return {
            "GOV_PIPELINE_SMTP_HOST": self.host,
            "GOV_PIPELINE_SMTP_PORT": str(self.port),
            "GOV_PIPELINE_SMTP_TLS": "none",
            "GOV_PIPELINE_SMTP_FROM": sender,
        }

    def received(self) -> list[ReceivedMail]:
        """A copy of the messages so far."""
        with self._lock:
            return list(self.messages)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[ReceivedMail]:
        """The messages once there are at least `count` (or all there are at the timeout)."""
        deadline = time.monotonic() + timeout_s
        while len(self.received()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received()


class _Handler:
    def __init__(self, inbox: Inbox, on_message: Callable[[ReceivedMail], None] | None) -> None:
        self.inbox = inbox
        self.on_message = on_message

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = message_from_bytes(raw, policy=policy.default)
        mail = ReceivedMail(str(envelope.mail_from), list(envelope.rcpt_tos), message)
        with self.inbox._lock:
            self.inbox.messages.append(mail)
        if self.on_message is not None:
            self.on_message(mail)
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _authenticator(inbox: Inbox, login: tuple[str, str]) -> Any:
    def check(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == login
        )
        if ok:
            with inbox._lock:
                inbox.logins.append(login[0])
        return AuthResult(success=ok, handled=False)

    return check


@contextmanager
def smtp_receiver(
    port: int = 0,
    *,
    login: tuple[str, str] | None = None,
    on_message: Callable[[ReceivedMail], None] | None = None,
) -> Iterator[Inbox]:
    """Serve SMTP on 127.0.0.1:`port` (0 = a free port) until the block ends; yields the
    inbox. With `login` (user, password) a sender must log in (over plain text: loopback
    only)."""
    inbox = Inbox("127.0.0.1", port or _free_port())
    options: dict[str, Any] = {}
    if login is not None:
        options = {"auth_required": True, "auth_require_tls": False,
                   "authenticator": _authenticator(inbox, login)}  # fmt: skip
    controller = Controller(
        _Handler(inbox, on_message), hostname=inbox.host, port=inbox.port, **options
    )
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C, one line per message received."""
    parser = argparse.ArgumentParser(
        prog="python -m gov_pipeline.embedded.smtp_receiver",
        description="Receive emails on 127.0.0.1 and print one line for each.",
    )
    parser.add_argument("--port", type=int, default=8025, help="port (default 8025)")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)

    def report(mail: ReceivedMail) -> None:
        sys.stdout.write(f"receiver: email to {mail.to}: {mail.subject}\n")
        sys.stdout.flush()

    with smtp_receiver(args.port, on_message=report) as inbox:
        sys.stdout.write(f"receiver: listening on 127.0.0.1:{inbox.port} (no TLS, no login)\n")
        sys.stdout.flush()
        stop.wait()
    sys.stdout.write(f"receiver: stopped; {len(inbox.messages)} email(s) received\n")


if __name__ == "__main__":
    main()
