"""The dashboard's front end: deadlines, the connection cap, malformed requests, the token."""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlops_cli import ModelVersion, Project
from mlops_cli.ui.server import make_server, redacted, same_secret, url_of
from mlops_cli.ui.transport import Limits, Served, oldest_idle, overdue

LIMITS = Limits(header_timeout_s=10, body_timeout_s=30, idle_timeout_s=20)


@dataclass
class Reading:
    started_at: float
    headers_finished: bool = False


@dataclass
class Conn:
    opened_at: float = 0.0
    last_activity: float = 0.0
    requests: list[Any] = field(default_factory=list)
    request: Reading | None = None
    total_outbufs_len: int = 0


# -- the deadline rules (pure) ------------------------------------------------------------------


def test_a_header_gets_its_deadline_from_the_first_byte() -> None:
    conn = Conn(opened_at=0, last_activity=9.9, request=Reading(started_at=1))
    assert not overdue(conn, 11.0, LIMITS)  # 10 s since the first byte: still in time
    assert overdue(conn, 11.001, LIMITS)  # a byte now and then does not extend it


def test_a_body_gets_its_deadline_after_the_header_one() -> None:
    conn = Conn(request=Reading(started_at=1, headers_finished=True), last_activity=40)
    assert not overdue(conn, 41.0, LIMITS)  # 1 + 10 + 30
    assert overdue(conn, 41.001, LIMITS)


def test_an_idle_connection_times_out_from_its_last_byte() -> None:
    conn = Conn(opened_at=0, last_activity=5)
    assert not overdue(conn, 25.0, LIMITS)
    assert overdue(conn, 25.001, LIMITS)
    fresh = Conn(opened_at=100, last_activity=0)  # opened, nothing sent yet
    assert not overdue(fresh, 120.0, LIMITS) and overdue(fresh, 120.001, LIMITS)


def test_a_connection_being_answered_is_never_overdue() -> None:
    conn = Conn(requests=["a whole request"], request=Reading(started_at=0))
    assert not overdue(conn, 1e9, LIMITS)


def test_the_oldest_idle_connections_are_the_ones_closed_for_room() -> None:
    a, b, c = Conn(last_activity=3), Conn(last_activity=1), Conn(last_activity=2)
    busy = Conn(last_activity=0, requests=["r"])
    sending = Conn(last_activity=0, total_outbufs_len=10)
    assert oldest_idle([a, b, c, busy, sending]) == [b]
    assert oldest_idle([a, b, c, busy, sending], 2) == [b, c]
    assert oldest_idle([busy, sending], 3) == []


# -- a served dashboard -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transport") / "p"
    Project.init(root).registry.register_version(ModelVersion("gnn", "1.0.0", model_path="/m"))
    return root


@pytest.fixture
def serve(project: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(**options: Any) -> Served:
        served = make_server(str(project), "127.0.0.1", 0, **options)
        threading.Thread(target=served.serve_forever, daemon=True).start()
        started.append(served)
        return served

    yield start
    for served in started:
        served.shutdown()
        served.server_close()


def raw(served: Served, data: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no client library to tidy them) and read the whole answer."""
    with socket.create_connection(served.server_address, timeout=60) as conn:
        conn.sendall(data)
        got = b""
        while chunk := conn.recv(65536):
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head + b"\r\n\r\n" + body


def get(path: str, headers: bytes = b"") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
        + headers
        + b"\r\n"
    )


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


def wait_for(what: Any, wait_s: float = 60) -> Any:
    """Poll until `what()` is true (a generous deadline that only catches a hang)."""
    deadline = time.monotonic() + wait_s
    while not (found := what()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return found


def test_the_server_closes_a_connection_whose_header_is_late(serve: Any) -> None:
    served = serve()
    with socket.create_connection(served.server_address, timeout=60) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        channels = served.server.active_channels
        channel = wait_for(
            lambda: next((c for c in list(channels.values()) if c.request is not None), None)
        )
        started = channel.request.started_at
        served.server.maintenance(started + 9)  # the clock, moved by hand
        assert not channel.will_close
        served.server.maintenance(started + 10.5)
        assert conn.recv(100) == b""  # closed, without an answer


def test_past_the_cap_the_oldest_idle_connection_is_closed(serve: Any) -> None:
    served = serve(limits=Limits(max_connections=3))
    held = []
    for _ in range(3):
        conn = socket.create_connection(served.server_address, timeout=60)
        conn.sendall(b"GET / HTTP/1.1\r\n")
        held.append(conn)
    wait_for(lambda: served.connections() == 3)
    status, _ = raw(served, get("/api/overview"))
    assert status == 200
    assert served.connections() <= 3
    assert sum(conn.recv(100) == b"" for conn in held) >= 1
    for conn in held:
        conn.close()


def test_every_answer_of_the_server_itself_carries_the_security_headers(serve: Any) -> None:
    status, answer = raw(
        serve(), b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n"
    )
    assert status == 400
    assert b"Content-Security-Policy: default-src 'self'" in answer
    assert b"X-Content-Type-Options: nosniff" in answer


def test_requests_waiting_for_a_worker_print_nothing(serve: Any) -> None:
    """Waitress warns "Task queue depth is N" whenever a whole request waits for a worker:
    the normal case under load, kept off the terminal."""
    import logging

    serve()
    assert not logging.getLogger("waitress.queue").isEnabledFor(logging.WARNING)
    assert logging.getLogger("waitress").isEnabledFor(logging.WARNING)  # errors still shown


def test_a_port_in_use_leaves_no_descriptor_open(serve: Any, project: Path) -> None:
    from mlops_cli.errors import ServiceError

    taken = serve().server_address[1]
    make_server(str(project), "127.0.0.1", 0).server_close()  # imports and caches warmed
    # Other threads of the test process (earlier tests' flushers, the server under test) may
    # hold a descriptor or two more or less at any moment: a leak of one per refused start
    # shows as 30 after 30 starts.
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(30):
        with pytest.raises(ServiceError, match=f"cannot serve on 127.0.0.1:{taken}"):
            make_server(str(project), "127.0.0.1", taken)
    assert len(os.listdir("/proc/self/fd")) - before < 10


# -- malformed requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Authorization: Bearer s3cr\u00e9t",
        "Authorization: Bearer \u2603",
        "Cookie: mlops_token=\u00e9\u2603",
        "Cookie: \u2603=\u2603; mlops_token",
    ],
)
def test_non_ascii_credentials_are_refused_not_a_crash(
    serve: Any, header: str, capfd: pytest.CaptureFixture[str]
) -> None:
    served = serve(token="s3cret")
    status, answer = raw(served, get("/api/overview", header.encode() + b"\r\n"))
    assert status == 401, answer
    assert b"needs its access token" in answer
    status, _ = raw(served, get("/api/overview?token=%C3%A9%E2%98%83"))
    assert status == 401
    assert "Traceback" not in capfd.readouterr().err


def test_a_non_ascii_session_token_is_refused_not_a_crash(
    serve: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    served = serve(allow_actions=True)
    body = b'{"model_type": "gnn"}'
    status, answer = raw(
        served,
        b"POST /api/action/rollback HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + "X-Mlops-Session: s\u00e9ssion\u2603\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    assert status == 403 and b"missing or wrong session token" in answer
    assert "Traceback" not in capfd.readouterr().err


def test_a_content_length_that_is_no_number_is_a_400(serve: Any) -> None:
    for method in (b"GET", b"POST"):
        status, _ = raw(
            serve(allow_actions=True),
            method + b" /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
        )
        assert status == 400, method


@pytest.mark.parametrize(
    "path", ["/static/app.js%00.css", "/static/%00", "/model/gnn%00", "/api/model/gn%00n"]
)
def test_a_nul_byte_in_an_address_is_a_404(serve: Any, path: str) -> None:
    status, answer = raw(serve(), get(path))
    assert status == 404, answer
    assert b"Traceback" not in answer


def test_same_secret_compares_any_text() -> None:
    assert same_secret("s3cret", "s3cret")
    assert not same_secret("s3cr\u00e9t", "s3cret")
    assert not same_secret("\udcff", "s3cret")  # an undecodable byte, as headers carry it
    assert same_secret("\u00e9\u2603", "\u00e9\u2603")


# -- the access token in the printed address and the access log -------------------------------

BASE64_TOKEN = "a+b/c9=="


def test_a_base64_token_in_the_printed_address_lets_one_in(serve: Any) -> None:
    served = serve(token=BASE64_TOKEN)
    url = url_of(served, BASE64_TOKEN)
    assert url.endswith("/?token=a%2Bb%2Fc9%3D%3D")
    status, headers = fetch(url)
    assert status == 200
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    assert fetch(url.split("?")[0] + "api/overview", {"Cookie": cookie})[0] == 200
    # the token as typed: '+' reads as a space in a query, so it does not match
    assert fetch(url.split("?")[0] + f"?token={BASE64_TOKEN}")[0] == 401
    assert (
        fetch(url.split("?")[0] + "api/overview", {"Authorization": f"Bearer {BASE64_TOKEN}"})[0]
        == 200
    )


def test_the_access_log_never_shows_the_token(
    serve: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLOPS_UI_LOG", "1")
    served = serve(token=BASE64_TOKEN)
    url = url_of(served, BASE64_TOKEN)
    assert fetch(url + "&x=1")[0] == 200
    assert fetch(url.replace("?token=", "?token=wrong&token="))[0] == 401
    err = capfd.readouterr().err
    assert '"GET /?token=[redacted]&x=1" 200' in err
    assert '"GET /?token=[redacted]&token=[redacted]" 401' in err
    assert "a%2Bb" not in err and BASE64_TOKEN not in err and "wrong" not in err


def test_redacted_hides_every_spelling_of_the_token_parameter() -> None:
    assert redacted("/?token=abc") == "/?token=[redacted]"
    assert redacted("/api/x?kind=a&%74oken=abc") == "/api/x?kind=a&%74oken=[redacted]"
    assert redacted("/api/x?kind=a") == "/api/x?kind=a"
    assert redacted("/api/x") == "/api/x"


def test_sigterm_stops_the_server_even_when_it_lands_in_waitress_dispatch(project: Path) -> None:
    """SIGTERM raised while the loop is inside a connection's I/O callback (where waitress
    catches every exception but three, so a raising handler was swallowed and the dashboard
    served on): the loop still ends, and says it was SIGTERM. Deterministic: the signal is
    raised from within the dispatch itself."""
    import signal

    from waitress import wasyncore

    served = make_server(str(project), "127.0.0.1", 0)
    before = signal.getsignal(signal.SIGTERM)

    class Ringing(wasyncore.dispatcher):
        def readable(self) -> bool:
            return True

        def handle_read(self) -> None:
            self.recv(1)
            signal.raise_signal(signal.SIGTERM)  # the handler runs here, mid-dispatch

    left, right = socket.socketpair()
    Ringing(left, map=served._map)
    right.send(b"x")
    watchdog = threading.Timer(60, served.stop)  # (only a regression waits this long)
    watchdog.start()
    try:
        assert served.serve_until_terminated() is True
    finally:
        watchdog.cancel()
        served.server_close()
        right.close()
    assert signal.getsignal(signal.SIGTERM) is before  # the handler before it is back
