"""pushgw.push: one overall deadline against a trickling server; bad URLs are clean errors."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_cli import pushgw
from mlops_cli.errors import ServiceError, ValidationError

from .conftest import finishes

PAYLOAD = b'# TYPE model_drift_score gauge\nmodel_drift_score{model_type="g"} 0.25\n'


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += sock.recv(65536)
        self.server.requests.append((head.split(b"\r\n")[0].decode(), body))
        if self.server.mode == "trickle":
            reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            try:
                for byte in reply * 100:
                    sock.sendall(bytes([byte]))
                    if self.server.stop.wait(0.3):
                        return
            except OSError:
                return
        elif self.server.mode == "refuse":
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 14\r\n\r\nbad metric foo")
        else:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode
        self.requests: list[tuple[str, bytes]] = []
        self.stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    srv = _Server(request.param)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("server", ["ok"], indirect=True)
def test_push_puts_the_payload_under_the_job(server: _Server) -> None:
    assert pushgw.push(server.url, "mlops", PAYLOAD, deadline_s=5) == 200
    assert server.requests == [("PUT /metrics/job/mlops HTTP/1.1", PAYLOAD)]


@pytest.mark.parametrize("server", ["ok"], indirect=True)
def test_job_with_slash_and_path_prefix(server: _Server) -> None:
    pushgw.push(server.url + "/gw/", "ci/nightly", PAYLOAD, deadline_s=5, method="POST")
    assert server.requests[0][0] == "POST /gw/metrics/job@base64/Y2kvbmlnaHRseQ== HTTP/1.1"


@pytest.mark.parametrize("server", ["trickle"], indirect=True)
def test_trickling_server_is_cut_at_the_deadline(server: _Server) -> None:
    """Issue 12 case 9: a byte every few seconds held the push forever (timeout per read)."""
    with pytest.raises(ServiceError, match=r"no complete answer within 1\.5 s"):
        finishes(lambda: pushgw.push(server.url, "mlops", PAYLOAD, deadline_s=1.5))
    assert server.requests  # it did connect and send: the answer was what never finished


@pytest.mark.parametrize("server", ["refuse"], indirect=True)
def test_refused_push_names_status_and_body(server: _Server) -> None:
    with pytest.raises(
        ServiceError,
        match=r"^could not push to the Pushgateway at .*: it answered HTTP 400: bad metric foo$",
    ):
        pushgw.push(server.url, "mlops", PAYLOAD, deadline_s=5)


def test_connection_refused_is_a_service_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        ServiceError, match=r"could not push to the Pushgateway at http://127\.0\.0\.1"
    ):
        pushgw.push(f"127.0.0.1:{port}", "mlops", PAYLOAD, deadline_s=5)


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",
        "http://[::1]:notaport",
        "http://host:99999",
        "ftp://host",
        "http://",
        "http://user:pw@host",
        "http://host/x?y=1",
        "http://ho st",
        "http://host\n/metrics",
    ],
)
def test_bad_urls_are_validation_errors(url: str) -> None:
    with pytest.raises(ValidationError, match="invalid Pushgateway URL"):
        pushgw.push(url, "mlops", PAYLOAD, deadline_s=1)


def test_bad_job_and_deadline() -> None:
    with pytest.raises(ValidationError, match="job name is empty"):
        pushgw.push("http://127.0.0.1:1", "", PAYLOAD, deadline_s=1)
    with pytest.raises(ValidationError, match="deadline must be positive"):
        pushgw.push("http://127.0.0.1:1", "j", PAYLOAD, deadline_s=0)


def test_ipv6_target_is_shown_with_brackets() -> None:
    assert pushgw.parse_target("http://[::1]:9091", "j").shown == "http://[::1]:9091/metrics/job/j"


@pytest.mark.parametrize("server", ["trickle"], indirect=True)
def test_metrics_push_of_a_project_holds_its_deadline(server: _Server, tmp_path: Path) -> None:
    from mlops_cli import Project
    from mlops_cli.prometheus import push

    project = Project.init(tmp_path / "p")
    with pytest.raises(ServiceError, match="no complete answer within 1 s"):
        finishes(lambda: push(project, server.url, "mlops", deadline_s=1))


def test_cli_bad_push_url_is_one_error_line(tmp_path: Path) -> None:
    """Issue 12 case 9: `--push-url 'http://[::1'` was an InternalError."""
    from typer.testing import CliRunner

    from mlops_cli import Project
    from mlops_cli.cli import app

    project = Project.init(tmp_path / "p")
    result = CliRunner().invoke(
        app, ["-C", str(project.root), "metrics", "export", "--push-url", "http://[::1"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid Pushgateway URL 'http://[::1': ")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("server", ["ok"], indirect=True)
def test_cli_textfile_and_push_url_together_do_both(server: _Server, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mlops_cli import Project
    from mlops_cli.cli import app

    project = Project.init(tmp_path / "p")
    target = tmp_path / "mlops.prom"
    result = CliRunner().invoke(
        app,
        [
            "-C",
            str(project.root),
            "metrics",
            "export",
            "--textfile",
            str(target),
            "--push-url",
            server.url,
        ],
    )
    assert result.exit_code == 0, result.output
    assert [line for line, _ in server.requests] == ["PUT /metrics/job/mlops HTTP/1.1"]
    assert server.requests[0][1] == target.read_bytes()
    assert "wrote" in result.stderr and "pushed to" in result.stderr


@pytest.mark.service
def test_push_to_a_real_pushgateway(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import urllib.request

    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        pytest.skip("prometheus-pushgateway is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            binary,
            f"--web.listen-address=127.0.0.1:{port}",
            # its own store: Debian's default file is shared by every gateway on the machine
            f"--persistence.file={tmp_path / 'pushgateway.data'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # the gateway starting on a loaded machine
        while True:
            try:
                urllib.request.urlopen(url + "/metrics", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert pushgw.push(url, "ci/nightly", PAYLOAD, deadline_s=5) in (200, 202)
        text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        assert 'model_drift_score{instance="",job="ci/nightly",model_type="g"} 0.25' in text
        with pytest.raises(ServiceError, match="it answered HTTP 400"):
            pushgw.push(url, "mlops", b"not exposition format {\n", deadline_s=5)
    finally:
        proc.terminate()
        proc.wait(10)  # gone before the next test may be handed the same free port
