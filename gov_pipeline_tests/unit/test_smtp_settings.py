"""SMTP settings (GOV_PIPELINE_SMTP_*) and what an email says, without a server."""

from __future__ import annotations

import pytest

from gov_pipeline.config import load_settings
from gov_pipeline.domain.emails import (
    NOTIFICATION_LANE_MAX_ATTEMPTS,
    NOTIFICATION_LANE_RETRY_DELAY_S,
    Origin,
    SmtpTls,
    address_problem,
    email_body,
    message_id,
    one_line,
)
from gov_pipeline.domain.errors import ConfigurationError

BASE = {"GOV_PIPELINE_SMTP_HOST": "smtp.example.com", "GOV_PIPELINE_SMTP_FROM": "gov@example.com"}


def test_email_is_off_without_a_host() -> None:
    assert load_settings({}).smtp is None
    assert (
        load_settings({"GOV_PIPELINE_SMTP_HOST": "  ", "GOV_PIPELINE_SMTP_PORT": "x"}).smtp is None
    )


def test_defaults_are_starttls_on_port_25_and_ssl_on_465() -> None:
    smtp = load_settings(BASE).smtp
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.tls, smtp.user, smtp.password) == (
        "smtp.example.com", 25, SmtpTls.STARTTLS, None, None,
    )  # fmt: skip
    ssl = load_settings({**BASE, "GOV_PIPELINE_SMTP_TLS": "SSL"}).smtp
    assert ssl is not None and (ssl.tls, ssl.port) == (SmtpTls.SSL, 465)
    given = load_settings(
        {**BASE, "GOV_PIPELINE_SMTP_TLS": "none", "GOV_PIPELINE_SMTP_PORT": "2525"}
    )
    assert given.smtp is not None and (given.smtp.tls, given.smtp.port) == (SmtpTls.NONE, 2525)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"GOV_PIPELINE_SMTP_TLS": "tls"}, "GOV_PIPELINE_SMTP_TLS must be one of none, starttls, ssl, got 'tls'"),
        ({"GOV_PIPELINE_SMTP_PORT": "twenty-five"}, "GOV_PIPELINE_SMTP_PORT must be a port (1-65535), got 'twenty-five'"),
        ({"GOV_PIPELINE_SMTP_PORT": "0"}, "GOV_PIPELINE_SMTP_PORT must be a port"),
        ({"GOV_PIPELINE_SMTP_PORT": "70000"}, "GOV_PIPELINE_SMTP_PORT must be a port"),
        ({"GOV_PIPELINE_SMTP_PORT": "-1"}, "GOV_PIPELINE_SMTP_PORT must be a port"),
        ({"GOV_PIPELINE_SMTP_FROM": ""}, "GOV_PIPELINE_SMTP_FROM is required with GOV_PIPELINE_SMTP_HOST"),
        ({"GOV_PIPELINE_SMTP_FROM": "nobody"}, "GOV_PIPELINE_SMTP_FROM: not an email address: 'nobody'"),
        ({"GOV_PIPELINE_SMTP_FROM": "a@b.com\r\nBcc: x@y.com"}, "GOV_PIPELINE_SMTP_FROM: a From header must be one line"),
        ({"GOV_PIPELINE_SMTP_HOST": "smtp://mail.example.com"}, "GOV_PIPELINE_SMTP_HOST must be a host name"),
        ({"GOV_PIPELINE_SMTP_USER": "bot"}, "GOV_PIPELINE_SMTP_USER and GOV_PIPELINE_SMTP_PASSWORD go together"),
        ({"GOV_PIPELINE_SMTP_PASSWORD": "pw"}, "GOV_PIPELINE_SMTP_USER and GOV_PIPELINE_SMTP_PASSWORD go together"),
        ({"GOV_PIPELINE_SMTP_TLS": "none", "GOV_PIPELINE_SMTP_USER": "bot", "GOV_PIPELINE_SMTP_PASSWORD": "pw"},
         "GOV_PIPELINE_SMTP_TLS=none with a login is allowed only to a server on this host"),
    ],
)  # fmt: skip
def test_a_bad_value_is_refused_by_name(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings({**BASE, **extra})
    assert str(caught.value).startswith(message)


def test_a_login_in_clear_text_is_allowed_to_this_host_only() -> None:
    env = {**BASE, "GOV_PIPELINE_SMTP_TLS": "none", "GOV_PIPELINE_SMTP_USER": "bot",
           "GOV_PIPELINE_SMTP_PASSWORD": "pw"}  # fmt: skip
    for host in ("127.0.0.1", "localhost", "::1"):
        smtp = load_settings({**env, "GOV_PIPELINE_SMTP_HOST": host}).smtp
        assert smtp is not None and smtp.user == "bot" and smtp.password == "pw"


def test_the_password_never_shows_in_a_repr() -> None:
    settings = load_settings({**BASE, "GOV_PIPELINE_SMTP_USER": "bot",
                              "GOV_PIPELINE_SMTP_PASSWORD": "pw-sentinel-81c2"})  # fmt: skip
    assert settings.smtp is not None and settings.smtp.password == "pw-sentinel-81c2"
    assert "pw-sentinel-81c2" not in repr(settings)
    assert "pw-sentinel-81c2" not in repr(settings.smtp)
    assert "user='bot'" in repr(settings)


def test_the_retry_rule_is_the_notification_lanes() -> None:
    assert (NOTIFICATION_LANE_MAX_ATTEMPTS, NOTIFICATION_LANE_RETRY_DELAY_S) == (10, 1.0)


@pytest.mark.parametrize(
    ("address", "usable"),
    [("carol@example.com", True), ("c.o+x@mail.example.co.uk", True), ("carol", False),
     ("carol@localhost", False), ("Carol <carol@example.com>", False), ("a b@example.com", False),
     ("carol@example.com\r\nBcc: eve@example.com", False), ("@example.com", False)],
)  # fmt: skip
def test_only_a_plain_address_is_a_recipient(address: str, usable: bool) -> None:
    assert (address_problem(address) is None) is usable


def test_the_body_says_what_the_notification_is_about_and_which_execution_wrote_it() -> None:
    origin = Origin("acme", "policy", "7", "Policy approval", 2, 41)
    body = email_body("Please review.\n", origin)
    assert body == (
        "Please review.\n\nAbout: policy 7 (tenant acme)\n"
        "Sent by workflow 'Policy approval' (version 2), execution 41.\n"
    )
    assert email_body("", Origin("acme")) == "Sent by gov-pipeline.\n"
    assert one_line("Review\n due:\t Access  control") == "Review due: Access control"
    assert message_id(5, "Gov <gov@example.com>") == "<gov-pipeline.email.5@example.com>"
