"""Webhook signing (HMAC-SHA256), the host allow-list and an attempt's outcome (pure).

The receiver gets `X-Gov-Delivery-Id` (stable across retries, so it can drop duplicates),
`X-Gov-Timestamp` and `X-Gov-Signature: sha256=<hex>` over `<timestamp>.<body>`. Only a
delivery whose action said `unsigned: true` goes out without a signature; any other is
refused while the sending process has no key for it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from gov_pipeline.domain.errors import InvalidInputError

SIGNATURE_HEADER = "X-Gov-Signature"
TIMESTAMP_HEADER = "X-Gov-Timestamp"
DELIVERY_HEADER = "X-Gov-Delivery-Id"
# The key of a webhook that names no `secret_env` of its own.
GLOBAL_SECRET_ENV = "GOV_PIPELINE_WEBHOOK_SECRET"
DEFAULT_PORTS = {"http": 80, "https": 443}
_PORT = re.compile(r"[0-9]{1,5}")
_HOST_NAME = re.compile(r"[^\s/@?#\[\]:]+")  # a name or an IPv4 address: no port, no path


def check_url_allowed(url: str, allowed_hosts: tuple[str, ...]) -> str:
    """Return the host of `url` if webhooks may call it.

    An entry `host` allows any port, `host:port` that port only; the URL's port is the one it
    gives, else 80 for http and 443 for https.

    Raises:
        InvalidInputError: not http(s), or its host and port are not in the allow-list.
    """
    parts = urlsplit(url)
    try:
        host, port = normalize_host(parts.hostname or ""), parts.port
    except ValueError:  # a port that is not a number, or out of range
        host, port = "", None
    if parts.scheme not in DEFAULT_PORTS or not host:
        raise InvalidInputError("url", f"not an http(s) URL: {url[:100]!r}")
    effective = DEFAULT_PORTS[parts.scheme] if port is None else port
    for entry in allowed_hosts:
        try:
            allowed, allowed_port = parse_allowed_host(entry)
        except ValueError:
            continue  # load_settings refuses malformed entries: one that got here matches nothing
        if allowed == host and allowed_port in (None, effective):
            return host
    listed = ", ".join(allowed_hosts) or "none"
    raise InvalidInputError(
        "url",
        f"host {host_port(host, effective)!r} is not allow-listed (allowed: {listed}; "
        "add it to GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS)",
    )


def signing_key(
    secret_env: str | None, default: str | None, environ: Mapping[str, str]
) -> str | None:
    """The key a webhook is signed with: the value of its `secret_env` in `environ`, else
    `default` (GOV_PIPELINE_WEBHOOK_SECRET); None when neither is set or both are empty."""
    if secret_env:
        return environ.get(secret_env) or default
    return default


def no_signing_key(secret_env: str | None) -> str:
    """Why a delivery to be signed is refused when `signing_key` finds no key for it."""
    unset = (
        f"{secret_env} and {GLOBAL_SECRET_ENV} are not set"
        if secret_env
        else f"{GLOBAL_SECRET_ENV} is not set"
    )
    return f"no signing secret: {unset} in this process; refusing to send unsigned"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, headers: Mapping[str, str], body: bytes, max_age_s: float = 300) -> bool:
    """What a receiver does: check the signature and that the timestamp is recent.

    Header names are matched case-insensitively (HTTP servers differ in how they pass them).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get(TIMESTAMP_HEADER.lower(), "")
    signature = lower.get(SIGNATURE_HEADER.lower(), "")
    try:
        age = abs(time.time() - float(timestamp))
    except ValueError:
        return False
    expected = sign(secret, timestamp, body).encode()
    # Bytes: compare_digest refuses non-ASCII str, and a header may carry anything.
    return age <= max_age_s and hmac.compare_digest(
        signature.encode("utf-8", "surrogateescape"), expected
    )


@dataclass(frozen=True)
class AttemptResult:
    """How one delivery attempt went: delivered (`ok`), or the HTTP status and error."""

    ok: bool
    status_code: int | None
    error: str | None


def normalize_host(host: str) -> str:
    """`host` as the allow-list compares it: lower case, an IPv6 address compressed."""
    host = host.lower()
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host).compressed
        except ValueError:
            return host
    return host


def host_port(host: str, port: int | None) -> str:
    """How a host and port are written: `host:port`, `[ipv6]:port`; without port, the host."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def parse_allowed_host(entry: str) -> tuple[str, int | None]:
    """One entry of GOV_PIPELINE_WEBHOOK_ALLOWED_HOSTS: `host`, `host:port`, `[ipv6]`,
    `[ipv6]:port` or a bare IPv6 address.

    Returns:
        The host (normalized), and the port, or None when any port is allowed.

    Raises:
        ValueError: not one of those forms, or a port outside 1-65535; says which.
    """
    text = entry.strip()
    port: str | None = None
    if text.startswith("["):
        address, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("an IPv6 address is written [address] or [address]:port")
        host, port = _ipv6(address), (rest[1:] if rest else None)
    elif text.count(":") > 1:
        host = _ipv6(text)
    else:
        host, colon, after = text.partition(":")
        port = after if colon else None
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(f"not a host name: {host[:100]!r}")
        host = host.lower()
    if port is None:
        return host, None
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad port {port[:20]!r} (1-65535)")
    return host, int(port)


def _ipv6(text: str) -> str:
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        raise ValueError(f"not an IPv6 address: {text[:100]!r}") from None
