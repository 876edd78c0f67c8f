"""A real HTTP receiver on 127.0.0.1 for webhook tests: http.server in a thread, recording
every request, failing the first `fail_first` with 500, deduplicating by event id."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def doc(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str = ""
    fail_first: int = 0  # answer 500 to this many requests first
    always_fail: bool = False
    requests: list[Received] = field(default_factory=list)  # every request, in arrival order
    accepted: list[Received] = field(default_factory=list)  # first arrival of each id, 2xx
    duplicates: int = 0  # requests for an id already accepted
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            got = Received(headers, body)
            self.requests.append(got)
            if self.always_fail or len(self.requests) <= self.fail_first:
                return 500
            ids = {r.headers["X-Mlops-Event-Id"] for r in self.accepted}
            if headers["X-Mlops-Event-Id"] in ids:
                self.duplicates += 1
            else:
                self.accepted.append(got)
            return 200


@contextmanager
def receiver(**options: Any) -> Iterator[Receiver]:
    state = Receiver(**options)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            code = state.handle(dict(self.headers.items()), body)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just freed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"
