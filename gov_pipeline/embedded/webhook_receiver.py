"""A small receiving server for webhooks, bound to 127.0.0.1 (or the address given): it
verifies each signature and answers with scripted status codes. Used by the demo and the
tests, and on its own (`python -m gov_pipeline.embedded.webhook_receiver --port 8765`) by
the README's example."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from gov_pipeline.config import load_settings
from gov_pipeline.domain.webhooks import DELIVERY_HEADER, verify


@dataclass
class Received:
    """What the receiver accepted (valid signature, 2xx answer) and what it refused."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    delivery_ids: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # every request's, lower-case
    bad_signatures: int = 0
    requests: int = 0


# Called after each request with its path, the answer's status code and the body (parsed
# when it was accepted, else None).
OnRequest = Callable[[str, int, dict[str, Any] | None], None]


@contextmanager
def webhook_receiver(
    secret: str | None,
    statuses: tuple[int, ...] = (200,),
    port: int = 0,
    path: str = "/hook",
    on_request: OnRequest | None = None,
    host: str = "127.0.0.1",
) -> Iterator[tuple[str, Received]]:
    """Serve on `host`:`port` (0 = any free port); yields (url, received).

    Answers `statuses` in turn, the last one repeating; a bad signature gets 401 (with
    `secret` None nothing is verified: a receiver of unsigned webhooks).
    """
    received = Received()
    answers = list(statuses)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            accepted = None
            with lock:
                received.requests += 1
                received.headers.append({k.lower(): v for k, v in self.headers.items()})
                if secret is not None and not verify(secret, dict(self.headers.items()), body):
                    received.bad_signatures += 1
                    code = 401
                else:
                    code = answers.pop(0) if len(answers) > 1 else answers[0]
                    if code < 300:
                        accepted = json.loads(body)
                        received.bodies.append(accepted)
                        received.delivery_ids.append(self.headers.get(DELIVERY_HEADER, ""))
            self.send_response(code)
            self.end_headers()
            if on_request is not None:
                on_request(self.path, code, accepted)

        def log_message(self, *args: Any) -> None:
            pass  # quiet: the caller reports what matters

    server = ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}{path}", received
    finally:
        server.shutdown()
        server.server_close()


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _describe(path: str, code: int, body: dict[str, Any] | None) -> str:
    """One line per request: what arrived and how it was answered."""
    if body is None:
        refused = "bad signature" if code == 401 else "refused"
        return f"receiver: POST {path} -> {code} ({refused})"
    workflow = (body.get("workflow") or {}).get("name")
    entity = body.get("entity") or {}
    return (
        f"receiver: POST {path} -> {code}: {workflow}, execution {body.get('execution_id')}, "
        f"{entity.get('type')} {entity.get('id')} {body.get('status')}"
    )


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C, one line per request; signatures are checked with
    GOV_PIPELINE_WEBHOOK_SECRET when it is set."""
    parser = argparse.ArgumentParser(
        prog="python -m gov_pipeline.embedded.webhook_receiver",
        description="Receive webhooks and check their signatures.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    parser.add_argument(
        "--status", type=int, default=200, help="the status code answered (default 200)"
    )
    args = parser.parse_args(argv)
    secret = load_settings().webhook_secret
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)

    def report(path: str, code: int, body: dict[str, Any] | None) -> None:
        _say(_describe(path, code, body))

    with webhook_receiver(secret, (args.status,), args.port, "/", report, args.host) as (
        url,
        received,
    ):
        checked = "checked" if secret else "not checked (GOV_PIPELINE_WEBHOOK_SECRET is not set)"
        _say(f"receiver: listening on {url}, signatures {checked}")
        stop.wait()
    _say(
        f"receiver: stopped; {len(received.bodies)} accepted, "
        f"{received.bad_signatures} with a bad signature"
    )


if __name__ == "__main__":
    main()
