"""The dashboard's front end: waitress, with deadlines and a connection cap it lacks.

Waitress reads every connection on one thread and hands a request to the application's
threads only once it is whole, so a slow or half-open client holds no worker. What it does not
do by itself is added here, in the two hooks it offers (its periodic `maintenance` and
`handle_accept`): a deadline for a request's header and one for its body, counted from the
request's first byte (its own timeout counts from the last byte, so a client sending a byte
now and then would keep a connection for ever), and a connection cap that closes the oldest
idle connection to make room for a new one (its own cap stops accepting, so held connections
would lock every newcomer out).
"""

from __future__ import annotations

import heapq
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask


@dataclass(frozen=True)
class Limits:
    """How much the server gives one connection, and how many it keeps."""

    header_timeout_s: float = 10.0  # from a request's first byte to the end of its header
    body_timeout_s: float = 30.0  # from the end of its header to the end of its body
    idle_timeout_s: float = 30.0  # a connection with no request under way (keep-alive)
    max_connections: int = 1000  # past this, the oldest idle connection is closed
    backlog: int = 2048  # connections the kernel queues before the server accepts them
    threads: int = 4  # requests answered at once (each one whole before it gets a thread)
    check_every_s: float = 1.0  # how often deadlines are checked
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 1024 * 1024  # the application takes 64 KiB; more is a clear 413


class Connection(Protocol):
    """What the deadline rules read of a connection (a waitress channel)."""

    opened_at: float
    last_activity: float
    requests: list[Any]  # whole requests queued or being answered
    total_outbufs_len: int  # bytes of an answer not sent yet
    request: Any  # the request being read (None between requests)


def overdue(conn: Connection, now: float, limits: Limits) -> bool:
    """Whether a connection has used up its time: a request still being read past its header
    or body deadline (counted from its first byte), or an idle connection past the idle
    timeout. One being answered is never overdue."""
    if conn.requests:
        return False
    reading = conn.request
    if reading is None:
        since = max(conn.opened_at, conn.last_activity)
        return now - since > limits.idle_timeout_s
    started = float(getattr(reading, "started_at", conn.opened_at))
    if not reading.headers_finished:
        return now - started > limits.header_timeout_s
    return now - started > limits.header_timeout_s + limits.body_timeout_s


def oldest_idle(conns: Iterable[Connection], count: int = 1) -> list[Connection]:
    """The connections to close for room: of those neither being answered nor sending an
    answer, the `count` whose last byte came longest ago, oldest first (fewer when the
    others are busy)."""
    idle = [c for c in conns if not c.requests and not c.total_outbufs_len]
    return heapq.nsmallest(count, idle, key=lambda c: c.last_activity)


class _Parser(HTTPRequestParser):  # type: ignore[misc]
    """Waitress's parser, knowing when the request's first byte came (it is made then)."""

    def __init__(self, adj: Any) -> None:
        super().__init__(adj)
        self.started_at = time.time()


def error_task_class(headers: list[tuple[str, str]]) -> type:
    """Waitress's answer to a malformed request (400, 413, ...), with the security headers
    every answer of the dashboard carries."""

    class _ErrorTask(ErrorTask):  # type: ignore[misc]
        def execute(self) -> None:
            self.response_headers.extend(headers)
            super().execute()

    return _ErrorTask


class _Channel(HTTPChannel):  # type: ignore[misc]
    parser_class = _Parser

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.opened_at = time.time()
        super().__init__(*args, **kwargs)


class _Server(TcpWSGIServer):  # type: ignore[misc]
    channel_class = _Channel
    limits: Limits

    def maintenance(self, now: float) -> None:
        """Close every connection past its deadline (waitress calls this periodically)."""
        for channel in list(self.active_channels.values()):
            if overdue(channel, now, self.limits):
                channel.will_close = True  # closed by the loop on its next turn

    def handle_accept(self) -> None:
        """Accept every connection waiting (not one a turn of the loop: a flood would queue
        a normal request behind it), then make room: past the cap, close the oldest idle
        connections, a tenth of the cap at once so a flood costs one sort per tenth."""
        for _ in range(self.limits.backlog):
            before = len(self.active_channels)
            super().handle_accept()
            if len(self.active_channels) == before:
                break  # nothing more waiting (or a connection gone before its accept)
        over = len(self.active_channels) - self.limits.max_connections
        if over > 0:
            room = over + max(0, self.limits.max_connections // 10 - 1)
            victim: Any
            for victim in oldest_idle(self.active_channels.values(), room):
                victim.handle_close()


def allow_descriptors(needed: int) -> None:
    """Raise this process's soft limit on open files towards `needed` (as far as the hard
    limit allows): the cap on connections is the one that should bind, not a default 1,024."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Served:
    """A bound server with the standard library's surface: `serve_forever`, `shutdown` (from
    another thread), `server_close`, `server_address`."""

    def __init__(
        self,
        app: Callable[..., Any],
        host: str,
        port: int,
        limits: Limits,
        error_headers: list[tuple[str, str]],
    ) -> None:
        self._map: dict[int, Any] = {}
        server_class = type(
            "DashboardServer",
            (_Server,),
            {
                "limits": limits,
                "channel_class": type(
                    "DashboardChannel",
                    (_Channel,),
                    {"error_task_class": error_task_class(error_headers)},
                ),
            },
        )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.server = self._bind(server_class, app, host, port, family, limits)
        except OSError:
            wasyncore.close_all(self._map)  # the wake-up pipe waitress made before binding
            raise
        self.server_address = (str(self.server.effective_host), int(self.server.effective_port))
        allow_descriptors(limits.max_connections + 256)
        # "Task queue depth is N" on every request that waits for a worker: the queue is the
        # design (whole requests wait their turn), not a warning for the terminal.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()

    def _bind(
        self, server_class: type, app: Any, host: str, port: int, family: int, limits: Limits
    ) -> Any:
        return server_class(
            app,
            map=self._map,
            host=host,
            port=port,
            ipv4=family == socket.AF_INET,
            ipv6=family == socket.AF_INET6,
            threads=limits.threads,
            backlog=limits.backlog,
            # waitress's own cap above ours (ours closes the oldest idle one instead)
            connection_limit=limits.max_connections + 64,
            channel_timeout=limits.idle_timeout_s + limits.header_timeout_s + limits.body_timeout_s,
            cleanup_interval=limits.check_every_s,
            max_request_header_size=limits.max_header_bytes,
            max_request_body_size=limits.max_body_bytes,
            asyncore_use_poll=True,  # select() stops at 1,024 descriptors
            ident="mlops-ui",
            expose_tracebacks=False,
            log_socket_errors=False,  # a client that resets is no error of the server's
        )

    def serve_forever(self) -> None:
        self._stopped.clear()
        try:
            while not self._stop.is_set():
                wasyncore.loop(
                    timeout=self.server.adj.cleanup_interval, map=self._map, use_poll=True, count=1
                )
        finally:
            self._stopped.set()

    def serve_until_terminated(self) -> bool:
        """`serve_forever` until SIGTERM (True) or `stop`/`shutdown` (False). SIGTERM only
        sets the stop flag: an exception raised from a signal handler while waitress
        dispatches a connection's I/O is caught there (a bare except), and serving went on."""
        terminated: list[int] = []

        def on_term(signum: int, _frame: object) -> None:
            terminated.append(signum)
            self.stop()

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            self.serve_forever()
        finally:
            signal.signal(signal.SIGTERM, previous)
        return bool(terminated)

    def stop(self) -> None:
        """Ask `serve_forever` to return within `check_every_s` (safe in a signal handler:
        it only sets a flag)."""
        self._stop.set()

    def shutdown(self) -> None:
        """Stop `serve_forever` (running in another thread) and wait for it."""
        self._stop.set()
        self.server.pull_trigger()
        self._stopped.wait()

    def server_close(self) -> None:
        self.server.task_dispatcher.shutdown()
        wasyncore.close_all(self._map)

    def connections(self) -> int:
        """Client connections open now."""
        return len(self.server.active_channels)
