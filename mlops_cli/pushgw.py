"""Push to a Prometheus Pushgateway within one overall deadline.

prometheus_client's push applies its timeout to each socket read, so a server that trickles a
byte every few seconds holds the push forever. Here the exchange runs in a worker thread that
the caller waits for at most `deadline_s`; at the deadline the socket is shut down (which
unblocks the worker) and the push is a ServiceError. A malformed URL is a ValidationError
before anything connects.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from .errors import ServiceError, ValidationError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class PushTarget:
    """A validated Pushgateway endpoint for one job."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def shown(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def job_path(job: str) -> str:
    """The grouping path of a job, as the Pushgateway API spells it (base64 when it has a /)."""
    if not job:
        raise ValidationError("the Pushgateway job name is empty")
    if "/" in job:
        encoded = base64.urlsafe_b64encode(job.encode()).decode()
        return f"/metrics/job@base64/{encoded}"
    return f"/metrics/job/{quote(job, safe='')}"


def parse_target(url: str, job: str) -> PushTarget:
    """Validate a Pushgateway URL (http or https; scheme defaults to http) for `job`."""
    text = url.strip()
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise ValidationError(f"invalid Pushgateway URL {url!r}: control characters or spaces")
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise ValidationError(f"invalid Pushgateway URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValidationError(f"invalid Pushgateway URL {url!r}: the scheme must be http or https")
    if not host:
        raise ValidationError(f"invalid Pushgateway URL {url!r}: no host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValidationError(
            f"invalid Pushgateway URL {url!r}: no credentials, query or fragment allowed"
        )
    default = 443 if parts.scheme == "https" else 80
    prefix = parts.path.rstrip("/")
    return PushTarget(parts.scheme, host, port or default, prefix + job_path(job))


class _Exchange:
    """One HTTP request on a connection another thread may abort."""

    def __init__(self, target: PushTarget, method: str, payload: bytes, timeout: float) -> None:
        cls = (
            http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        )
        self.conn = cls(target.host, target.port, timeout=timeout)
        self.target = target
        self.method = method
        self.payload = payload
        self.status: int | None = None
        self.body = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.conn.request(
                self.method,
                self.target.path,
                body=self.payload,
                headers={"Content-Type": CONTENT_TYPE, "Connection": "close"},
            )
            response = self.conn.getresponse()
            self.body = response.read(MAX_RESPONSE_BYTES)
            self.status = response.status
        except BaseException as exc:  # reported to the waiting thread
            self.error = exc
        finally:
            self.conn.close()

    def abort(self) -> None:
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def push(url: str, job: str, payload: bytes, deadline_s: float, method: str = "PUT") -> int:
    """Send `payload` (text exposition format) for `job`; return the HTTP status (2xx).

    PUT replaces the job's previous push (as prometheus_client's push_to_gateway does); POST
    replaces only the series pushed. The whole exchange (connect, send, every read) ends
    within `deadline_s` seconds, else ServiceError. A non-2xx answer is a ServiceError with
    the start of its body; a bad URL a ValidationError.
    """
    if method not in ("PUT", "POST"):
        raise ValidationError(f"push method must be PUT or POST, not {method!r}")
    if not deadline_s > 0:
        raise ValidationError(f"push deadline must be positive, not {deadline_s!r}")
    target = parse_target(url, job)
    exchange = _Exchange(target, method, payload, timeout=deadline_s)
    started = time.monotonic()
    worker = threading.Thread(target=exchange.run, name="mlops-push", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        exchange.abort()
        worker.join(1.0)
        raise ServiceError(
            f"could not push to the Pushgateway at {target.shown}: no complete answer within "
            f"{deadline_s:g} s"
        )
    if exchange.error is not None:
        exc = exchange.error
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, TimeoutError) or time.monotonic() - started >= deadline_s:
            reason = f"no complete answer within {deadline_s:g} s"
        raise ServiceError(
            f"could not push to the Pushgateway at {target.shown}: {reason or type(exc).__name__}"
        ) from None
    status = exchange.status or 0
    if not 200 <= status < 300:
        detail = exchange.body[:200].decode("utf-8", errors="replace").strip()
        raise ServiceError(
            f"could not push to the Pushgateway at {target.shown}: it answered HTTP {status}"
            + (f": {detail}" if detail else "")
        )
    return status
