"""A real PostgreSQL server for the tests: Debian's binaries, started by the test session.

`initdb` and `postgres` refuse to run as root, so both run as the `postgres` user
(`subprocess.Popen(user=...)`), the data directory in a temp folder that user owns, the server
a direct child on a free 127.0.0.1 port, stopped with SIGINT (fast shutdown). Without the
binaries or psycopg the tests skip, except under CI=true, where that fails the run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest


def _binaries() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return os.path.dirname(found[-1]) if found else None


def benchmark_server() -> Server:
    """A server of its own for a benchmark script, with fsync on as in production; without the
    binaries the script ends with a one-line hint."""
    bindir = _binaries()
    if bindir is None:
        sys.exit("error: no PostgreSQL binaries (apt-get install postgresql)")
    return Server(bindir, fsync=True)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL tests cannot run under CI=true: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A running server: `url(db)` names a database on it (superuser, trust auth)."""

    def __init__(self, bindir: str, fsync: bool = False) -> None:
        self.bindir = bindir
        self.fsync = fsync  # off for tests (no durability asked), on for benchmarks
        self.user = "postgres"
        entry = pwd.getpwnam(self.user)
        self.top = tempfile.mkdtemp(prefix="mlops-pg-")
        os.chown(self.top, entry.pw_uid, entry.pw_gid)
        self.datadir = os.path.join(self.top, "data")
        subprocess.run(
            [f"{bindir}/initdb", "-N", "-A", "trust", "-U", self.user, "-D", self.datadir],
            user=self.user,
            check=True,
            capture_output=True,
            cwd=self.top,
        )
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        log = open(os.path.join(self.top, "server.log"), "ab")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(
            [
                f"{self.bindir}/postgres",
                "-D",
                self.datadir,
                "-p",
                str(self.port),
                "-k",
                self.top,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"fsync={'on' if self.fsync else 'off'}",
                "-c",
                "max_connections=200",
            ],
            user=self.user,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.top,
        )
        log.close()
        deadline = time.monotonic() + 120  # a loaded machine starts it slowly
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: see {self.top}/server.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
                import psycopg

                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except OSError:
                time.sleep(0.05)
            except Exception:  # the server is starting up: not accepting yet
                time.sleep(0.05)
        raise RuntimeError("postgres did not accept connections within 120 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def url(self, db: str, user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@127.0.0.1:{self.port}/{db}"

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    bindir = _binaries()
    if bindir is None:
        _unavailable(
            "no PostgreSQL binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install '.[postgres]')")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        _unavailable("no `postgres` user to run the server as")
    assert bindir is not None
    server = Server(bindir)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(pg_server: Server) -> str:
    """A URL of a new empty database (no mlops schema yet)."""
    return pg_server.url(pg_server.create_database())
