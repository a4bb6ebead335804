"""Settings, read from the environment in this one place (GOV_PIPELINE_* variables)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from gov_pipeline.domain.emails import (
    DEFAULT_PORTS,
    LOOPBACK_HOSTS,
    SmtpSettings,
    SmtpTls,
    sender_problem,
)
from gov_pipeline.domain.entities import Routing, parse_lanes
from gov_pipeline.domain.errors import ConfigurationError, InvalidInputError
from gov_pipeline.domain.webhooks import host_port, parse_allowed_host

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_HOME_DIRNAME = ".gov_pipeline"
DEFAULT_DB_ROLE = "gov_app"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with its default.

    `database_url` defaults to a SQLite file under `home`, so nothing needs installing.
    """

    home: Path
    database_url: str
    # PostgreSQL: the role the application takes on connect, so row-level security applies
    # (`gov_app`, made by the migrations); None connects as the URL's user.
    db_role: str | None = DEFAULT_DB_ROLE
    redis_url: str = DEFAULT_REDIS_URL
    redis_prefix: str = "gov"
    chain_depth_limit: int = 5
    webhook_allowed_hosts: tuple[str, ...] = ()
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_retry_delay_s: float = 1.0
    # Email of notifications (GOV_PIPELINE_SMTP_*); None: email is off, nothing is queued.
    smtp: SmtpSettings | None = None
    log_sql: bool = False
    sensor_interval_s: int = 5
    sensor_max_changes: int = 2000
    batch_threshold: int = 4
    batch_size: int = 1000
    sweep_grace_s: int = 120
    sweep_interval_s: int = 60
    # Seconds between ticks of the sensor that fires `scheduled` workflows (cron granularity
    # is a minute: a tick fires up to this long after its time).
    scheduled_interval_s: int = 15
    worker_reconcile_s: int = 30
    # The governance assets (orchestration/governance.py): how often they are refreshed after
    # runs, the window of the workflow outcomes, and the change lag their check allows.
    governance_refresh_s: int = 30
    outcomes_window_h: int = 24
    change_lag_threshold_s: int = 300
    # The lane each entity type's runs go to (GOV_PIPELINE_ENTITY_LANES overrides the
    # defaults of domain/entities.py: risk -> assessment, compliance_requirement -> evidence).
    routing: Routing = field(default_factory=Routing)
    default_tenant: str | None = None
    default_actor: str | None = None

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks: no password of a URL, no webhook secret.
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_url"):
                value = mask_url_password(value)
            if f.repr:
                shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"


def mask_url_password(url: str) -> str:
    """`url` with the password of its user info replaced by `***` (nothing else changed)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ConfigurationError(f"{name} must be >= 0, got {value}")
    return value


def _role(env: Mapping[str, str]) -> str | None:
    raw = env.get("GOV_PIPELINE_DB_ROLE")
    if raw is None:
        return DEFAULT_DB_ROLE
    if raw == "":
        return None
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", raw):
        raise ConfigurationError(
            f"GOV_PIPELINE_DB_ROLE must be a role name ([a-z_][a-z0-9_]*), got {raw[:70]!r}"
        )
    return raw


def _allowed_hosts(env: Mapping[str, str]) -> tuple[str, ...]:
    name = "GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS"
    hosts = []
    for raw in env.get(name, "").split(","):
        if not raw.strip():
            continue
        try:
            hosts.append(host_port(*parse_allowed_host(raw)))
        except ValueError as exc:
            raise ConfigurationError(
                f"{name}: {raw.strip()[:100]!r} is not host, host:port, [ipv6] or "
                f"[ipv6]:port ({exc})"
            ) from None
    return tuple(hosts)


def _smtp_port(env: Mapping[str, str], tls: SmtpTls) -> int:
    raw = env.get("GOV_PIPELINE_SMTP_PORT", "").strip()
    if not raw:
        return DEFAULT_PORTS[tls]
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ConfigurationError(f"GOV_PIPELINE_SMTP_PORT must be a port (1-65535), got {raw!r}")
    return int(raw)


def _smtp(env: Mapping[str, str]) -> SmtpSettings | None:
    """The SMTP settings, or None when GOV_PIPELINE_SMTP_HOST is unset (email off)."""
    host = env.get("GOV_PIPELINE_SMTP_HOST", "").strip()
    if not host:
        return None
    if any(c.isspace() or c in "/@" for c in host):
        raise ConfigurationError(f"GOV_PIPELINE_SMTP_HOST must be a host name, got {host[:100]!r}")
    raw_tls = env.get("GOV_PIPELINE_SMTP_TLS", "").strip().lower() or SmtpTls.STARTTLS
    try:
        tls = SmtpTls(raw_tls)
    except ValueError:
        modes = ", ".join(SmtpTls)
        raise ConfigurationError(
            f"GOV_PIPELINE_SMTP_TLS must be one of {modes}, got {raw_tls[:40]!r}"
        ) from None
    sender = env.get("GOV_PIPELINE_SMTP_FROM", "").strip()
    if not sender:
        raise ConfigurationError("GOV_PIPELINE_SMTP_FROM is required with GOV_PIPELINE_SMTP_HOST")
    problem = sender_problem(sender)
    if problem:
        raise ConfigurationError(f"GOV_PIPELINE_SMTP_FROM: {problem}")
    user = env.get("GOV_PIPELINE_SMTP_USER") or None
    password = env.get("GOV_PIPELINE_SMTP_PASSWORD") or None
    if (user is None) != (password is None):
        raise ConfigurationError(
            "GOV_PIPELINE_SMTP_USER and GOV_PIPELINE_SMTP_PASSWORD go together: set both or neither"
        )
    if user and tls == SmtpTls.NONE and host.lower().strip("[]") not in LOOPBACK_HOSTS:
        # The login would cross the network in clear text.
        raise ConfigurationError(
            "GOV_PIPELINE_SMTP_TLS=none with a login is allowed only to a server on this "
            f"host (localhost, 127.0.0.1, ::1), not {host[:100]!r}: use starttls or ssl"
        )
    port = _smtp_port(env, tls)
    return SmtpSettings(host=host, sender=sender, port=port, tls=tls, user=user, password=password)


def _routing(env: Mapping[str, str]) -> Routing:
    try:
        return Routing(parse_lanes(env.get("GOV_PIPELINE_ENTITY_LANES", "")))
    except InvalidInputError as exc:
        raise ConfigurationError(str(exc)) from None


def normalize_database_url(url: str) -> str:
    """Give PostgreSQL URLs an explicit driver.

    SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3, which is not installed;
    we ship psycopg2, so the scheme is made explicit.
    """
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url[len(bare) :]
    return url


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build `Settings` from `env` (default: the process environment).

    Raises:
        ConfigurationError: a variable holds a value that cannot be used.
    """
    env = os.environ if env is None else env
    home = Path(env.get("GOV_PIPELINE_HOME") or Path.cwd() / DEFAULT_HOME_DIRNAME).resolve()
    database_url = env.get("GOV_PIPELINE_DATABASE_URL") or f"sqlite:///{home / 'gov_pipeline.db'}"
    hosts = _allowed_hosts(env)
    return Settings(
        home=home,
        database_url=normalize_database_url(database_url),
        db_role=_role(env),
        redis_url=env.get("GOV_PIPELINE_REDIS_URL") or DEFAULT_REDIS_URL,
        redis_prefix=env.get("GOV_PIPELINE_REDIS_PREFIX") or "gov",
        chain_depth_limit=_int(env, "GOV_PIPELINE_CHAIN_DEPTH_LIMIT", 5, minimum=1),
        webhook_allowed_hosts=hosts,
        webhook_secret=env.get("GOV_PIPELINE_WEBHOOK_SECRET") or None,
        webhook_retry_delay_s=_float(env, "GOV_PIPELINE_WEBHOOK_RETRY_DELAY", 1.0),
        smtp=_smtp(env),
        log_sql=env.get("GOV_PIPELINE_LOG_SQL", "") in {"1", "true", "yes"},
        sensor_interval_s=_int(env, "GOV_PIPELINE_SENSOR_INTERVAL", 5, minimum=1),
        sensor_max_changes=_int(env, "GOV_PIPELINE_SENSOR_MAX_CHANGES", 2000, minimum=1),
        batch_threshold=_int(env, "GOV_PIPELINE_BATCH_THRESHOLD", 4, minimum=0),
        batch_size=_int(env, "GOV_PIPELINE_BATCH_SIZE", 1000, minimum=1),
        sweep_grace_s=_int(env, "GOV_PIPELINE_SWEEP_GRACE", 120, minimum=1),
        sweep_interval_s=_int(env, "GOV_PIPELINE_SWEEP_INTERVAL", 60, minimum=1),
        scheduled_interval_s=_int(env, "GOV_PIPELINE_SCHEDULED_INTERVAL", 15, minimum=1),
        worker_reconcile_s=_int(env, "GOV_PIPELINE_WORKER_RECONCILE", 30, minimum=1),
        governance_refresh_s=_int(env, "GOV_PIPELINE_GOVERNANCE_REFRESH", 30, minimum=5),
        outcomes_window_h=_int(env, "GOV_PIPELINE_OUTCOMES_WINDOW", 24, minimum=1),
        change_lag_threshold_s=_int(env, "GOV_PIPELINE_CHANGE_LAG_THRESHOLD", 300, minimum=1),
        routing=_routing(env),
        default_tenant=env.get("GOV_PIPELINE_TENANT") or None,
        default_actor=env.get("GOV_PIPELINE_ACTOR") or None,
    )
