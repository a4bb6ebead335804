"""A small receiving server for webhooks, bound to 127.0.0.1: it verifies each signature and
answers with scripted status codes. Used by the demo and the tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gov_pipeline.domain.webhooks import DELIVERY_HEADER, verify


@dataclass
class Received:
    """What the receiver accepted (valid signature, 2xx answer) and what it refused."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    delivery_ids: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # every request's, lower-case
    bad_signatures: int = 0
    requests: int = 0


@contextmanager
def webhook_receiver(
    secret: str | None, statuses: tuple[int, ...] = (200,), port: int = 0, path: str = "/hook"
) -> Iterator[tuple[str, Received]]:
    """Serve on 127.0.0.1:`port` (0 = any free port); yields (url, received).

    Answers `statuses` in turn, the last one repeating; a bad signature gets 401 (with
    `secret` None nothing is verified: a receiver of unsigned webhooks).
    """
    received = Received()
    answers = list(statuses)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                received.requests += 1
                received.headers.append({k.lower(): v for k, v in self.headers.items()})
                if secret is not None and not verify(secret, dict(self.headers.items()), body):
                    received.bad_signatures += 1
                    code = 401
                else:
                    code = answers.pop(0) if len(answers) > 1 else answers[0]
                    if code < 300:
                        received.bodies.append(json.loads(body))
                        received.delivery_ids.append(self.headers.get(DELIVERY_HEADER, ""))
            self.send_response(code)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass  # quiet: the caller reports what matters

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}", received
    finally:
        server.shutdown()
        server.server_close()
