"""The dashboard under half-open connections: a normal request still gets its answer.

A client opens many connections and sends each half a request header, then holds them. The
server runs in its own process (as `mlops ui` does); quick size 200 connections, full size
(`make stress`) 5,000. Two caps: below the number held (the server closes the oldest idle
connections to make room) and above it (it holds them all and still answers). The time a
normal request took is printed, never asserted (docs/reliability.md has the full-size figure).
"""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_cli import ModelVersion, Project

from .helpers import scale

HALF_OPEN = scale(200, 5000)
PARTIAL = b"GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
SERVER = """
import sys
from mlops_cli.ui.server import make_server, url_of
from mlops_cli.ui.transport import Limits
server = make_server(sys.argv[1], limits=Limits(max_connections=int(sys.argv[2])))
print(url_of(server), flush=True)
server.serve_forever()
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    Project.init(root).registry.register_version(ModelVersion("gnn", "1.0.0", model_path="/m"))
    return root


def serving(root: Path, cap: int) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(root), str(cap)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def raise_open_files(needed: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


@pytest.mark.parametrize("cap", ["below", "above"])
def test_a_normal_request_answers_while_half_open_connections_are_held(
    project: Path, cap: str
) -> None:
    limit = max(HALF_OPEN // 5, 10) if cap == "below" else HALF_OPEN + 100
    raise_open_files(HALF_OPEN + 256)
    for url in serving(project, limit):
        host, port = url.split("//")[1].rstrip("/").split(":")
        held: list[socket.socket] = []
        try:
            for _ in range(HALF_OPEN):
                conn = socket.create_connection((host, int(port)), timeout=60)
                conn.sendall(PARTIAL)
                held.append(conn)
            started = time.perf_counter()
            with urllib.request.urlopen(url + "api/overview", timeout=60) as resp:
                status, body = resp.status, resp.read()
            took = time.perf_counter() - started
            print(
                f"\n{HALF_OPEN} half-open connections held, cap {limit}: "
                f"a normal request answered in {took * 1000:.0f} ms"
            )
            assert status == 200
            assert [m["model_type"] for m in json.loads(body)["model_types"]] == ["gnn"]
            if cap == "below":
                # the server keeps at most `limit`: the others were closed (EOF on our side)
                assert closed(held, HALF_OPEN - limit) >= HALF_OPEN - limit
            else:
                assert closed(held, 1, wait_s=0) == 0  # every one still open
        finally:
            for conn in held:
                conn.close()


def closed(conns: list[socket.socket], expected: int, wait_s: float = 60) -> int:
    """How many of `conns` the server closed, waiting (up to `wait_s`, a deadline that only
    catches hangs) until `expected` of them have."""
    found: set[int] = set()
    with selectors.DefaultSelector() as sel:
        for i, conn in enumerate(conns):
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ, i)
        deadline = time.monotonic() + wait_s
        while True:
            for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
                i = key.data
                try:
                    got = conns[i].recv(4096)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    got = b""
                if got == b"" and i not in found:
                    found.add(i)
                    sel.unregister(conns[i])
            if len(found) >= expected or time.monotonic() >= deadline:
                return len(found)
