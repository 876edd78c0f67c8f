"""The service path on PostgreSQL: every acknowledged record is stored exactly once, or the call
that could not keep it failed loudly (multiprocessing workers, SIGTERM/SIGINT, a server that
goes away and comes back, a server away at exit, a record PostgreSQL refuses, the buffer bound).

The flush interval and size are injected, so records are still buffered when the process ends;
waits are for outcomes, with deadlines that only catch hangs."""

from __future__ import annotations

import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_cli import ABTestConfig, ModelVersion, Project

from .. import pg_server as fixtures
from ..pg_server import Server

pg_server = fixtures.pg_server
pg_url = fixtures.pg_url

pytestmark = pytest.mark.postgres
FORK = multiprocessing.get_context("fork")
NEVER = 3600.0  # a flush interval no test reaches: only the end of a process writes
DEADLINE = 120.0


@pytest.fixture(autouse=True)
def _private_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "spool"
    monkeypatch.setenv("MLOPS_SPOOL_DIR", str(folder))
    return folder


@pytest.fixture
def url(pg_url: str) -> Iterator[str]:
    """A project with a running test `t` (gnn 1.0.0 against 1.1.0)."""
    with Project.init(pg_url) as project:
        for v in ("1.0.0", "1.1.0"):
            project.registry.register_version(ModelVersion("gnn", v, model_path="/m"))
        project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="1.1.0"))
    yield pg_url


@pytest.fixture
def no_timed_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores opened from now on (also in forked children) write only when they end."""
    from mlops_cli.store.postgres import buffer

    monkeypatch.setattr(buffer, "FLUSH_SECONDS", NEVER)
    monkeypatch.setattr(buffer, "FLUSH_RECORDS", 10**6)


def stored_users(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT user_id FROM requests WHERE test = 't'").fetchall()
    return [str(r[0]) for r in rows]


def assert_once(url: str, acknowledged: set[str]) -> list[str]:
    """Every acknowledged record stored, none twice; the stored ids."""
    users = stored_users(url)
    assert len(users) == len(set(users)), "a record was stored twice"
    missing = acknowledged - set(users)
    assert not missing, f"{len(missing)} acknowledged records lost"
    return users


def wait_for(predicate: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def record(project: Any, user: str) -> None:
    project.ab.record_result("t", "control", 12.0, 0.8, user_id=user)


# -- multiprocessing workers --------------------------------------------------------------------

PER_TASK = 150


def _pool_task(task: int) -> int:
    """What a seed-style worker does: the module-level manager of the default project."""
    import mlops_cli

    for i in range(PER_TASK):
        mlops_cli.ab_test_manager.record_result("t", "treatment", 9.0, 0.7, user_id=f"{task}-{i}")
    return PER_TASK


@pytest.mark.parametrize("ending", ["with", "close-join"])
def test_pool_workers_returning_normally_store_every_record(
    url: str, no_timed_flush: None, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    # `with Pool()` ends its workers with SIGTERM; close() and join() let them return.
    monkeypatch.setenv("MLOPS_PROJECT_DIR", url)
    tasks = range(8)
    if ending == "with":
        with FORK.Pool(4) as pool:
            done = pool.map(_pool_task, tasks)
    else:
        pool = FORK.Pool(4)
        done = pool.map(_pool_task, tasks)
        pool.close()
        pool.join()
    assert sum(done) == 8 * PER_TASK
    expected = {f"{t}-{i}" for t in tasks for i in range(PER_TASK)}
    assert wait_for(lambda: len(stored_users(url)) >= len(expected), 20), len(stored_users(url))
    assert set(assert_once(url, expected)) == expected


def _process_target(url: str, task: int) -> None:
    project = Project.open(url)
    for i in range(PER_TASK):
        record(project, f"p{task}-{i}")


def test_process_targets_store_every_record_and_never_the_parents(
    url: str, no_timed_flush: None
) -> None:
    parent = Project.open(url)
    for i in range(10):
        record(parent, f"parent-{i}")  # buffered in the parent when the children fork
    children = [FORK.Process(target=_process_target, args=(url, t)) for t in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(DEADLINE)
        assert child.exitcode == 0
    parent.close()
    expected = {f"p{t}-{i}" for t in range(3) for i in range(PER_TASK)}
    expected |= {f"parent-{i}" for i in range(10)}
    assert set(assert_once(url, expected)) == expected


# -- signals ------------------------------------------------------------------------------------

RECORDER = """
import sys
from pathlib import Path
from mlops_cli import Project
from mlops_cli.store.postgres import PostgresStore

store = PostgresStore(sys.argv[1], flush_seconds=3600, flush_records=10**6)
project = Project(store, Path.cwd())
print("ready", flush=True)
i = 0
while True:
    project.ab.record_result("t", "control", 12.0, 0.8, user_id=str(i))
    print(i, flush=True)  # acknowledged
    i += 1
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_loop_keeps_every_acknowledged_record(url: str, signum: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", RECORDER, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    acknowledged: set[str] = set()
    while len(acknowledged) < 200:
        line = proc.stdout.readline()
        assert line, "the recorder ended early"
        acknowledged.add(line.strip())
    proc.send_signal(signum)
    # Read the rest through the same buffered reader: communicate() would read the pipes'
    # descriptors and miss acknowledgements this reader already holds.
    acknowledged |= set(proc.stdout.read().split())
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.wait(timeout=DEADLINE)
    if signum == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM, err  # as the default handler would
    else:
        assert "KeyboardInterrupt" in err
    users = assert_once(url, acknowledged)
    assert len(users) - len(acknowledged) <= 1  # recorded, killed before its acknowledgement


# -- the server away ----------------------------------------------------------------------------


def test_the_server_stopped_and_restarted_mid_loop_loses_nothing(
    pg_server: Server, url: str, tmp_path: Path
) -> None:
    from mlops_cli.store.base import ab_stream
    from mlops_cli.store.postgres import PostgresStore

    # The store's append, below the registry read (the per-request calls route from a
    # snapshot): every call while the server is away succeeds.
    store = PostgresStore(url, flush_records=50, flush_seconds=0.05, spool_dir=tmp_path)
    doc = {"ts": "2026-12-01T00:00:00Z", "variant": "control", "inference_time_ms": 1.0,
           "confidence": 0.5, "error": False}
    acknowledged = set()

    def append(n: int) -> None:
        for _ in range(n):
            user = str(len(acknowledged))
            store.append(ab_stream("t"), {**doc, "user_id": user})
            acknowledged.add(user)

    append(200)
    pg_server.stop()
    try:
        append(300)
    finally:
        pg_server.start()
    append(200)
    assert wait_for(lambda: store.buffered == 0)  # the flusher catches up by itself
    assert set(assert_once(url, acknowledged)) == acknowledged
    store.close()


SPOOLER = """
import sys
from mlops_cli.store.postgres import PostgresStore

store = PostgresStore(sys.argv[1], flush_seconds=3600, flush_records=10**6)
for i in range(50):
    store.append("ab/t", {"ts": "2026-12-01T00:00:00Z", "variant": "control",
                          "user_id": f"s{i}", "inference_time_ms": 1.0, "confidence": 0.5})
print("ready", flush=True)
sys.stdin.readline()  # exits normally once the server is gone
"""


def test_the_server_away_at_exit_spools_and_the_next_open_replays_once(
    pg_server: Server, url: str, _private_spool: Path
) -> None:
    from mlops_cli.store.postgres import PostgresStore

    proc = subprocess.Popen(
        [sys.executable, "-c", SPOOLER, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline() == "ready\n"
    pg_server.stop()
    try:
        _, err = proc.communicate("exit\n", timeout=DEADLINE)
    finally:
        pg_server.start()
    assert proc.returncode == 0
    assert "50 records are spooled to" in err
    (spooled,) = _private_spool.glob("*.jsonl")
    assert stat.S_IMODE(os.stat(_private_spool).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(spooled).st_mode) == 0o600
    kept = spooled.read_bytes()
    expected = {f"s{i}" for i in range(50)}
    assert stored_users(url) == []
    PostgresStore(url).close()  # the next open replays
    assert set(assert_once(url, expected)) == expected
    assert not list(_private_spool.glob("*.jsonl"))
    spooled.write_bytes(kept)  # a replay that had committed and is tried again
    PostgresStore(url).close()
    assert set(assert_once(url, expected)) == expected


def test_a_full_buffer_refuses_the_next_record_in_one_line(
    pg_server: Server, url: str, tmp_path: Path
) -> None:
    from mlops_cli.errors import BufferFullError, MlopsError
    from mlops_cli.store.postgres import PostgresStore

    store = PostgresStore(url, flush_records=2, max_records=5, spool_dir=tmp_path)
    doc = {"ts": "2026-12-01T00:00:00Z", "variant": "control", "inference_time_ms": 1.0,
           "confidence": 0.5, "error": False}
    pg_server.stop()
    try:
        for i in range(5):
            store.append("ab/t", {**doc, "user_id": f"b{i}"})
        with pytest.raises(BufferFullError) as info:
            store.append("ab/t", {**doc, "user_id": "refused"})
    finally:
        pg_server.start()
    assert isinstance(info.value, MlopsError)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("5 records wait for the PostgreSQL store")
    assert "this one was not recorded" in message
    store.flush()
    assert set(assert_once(url, {f"b{i}" for i in range(5)})) == {f"b{i}" for i in range(5)}
    store.close()


# -- a record PostgreSQL refuses ----------------------------------------------------------------


def test_a_nul_user_id_is_set_aside_loudly_and_the_others_are_stored(
    url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from mlops_cli.store.postgres import PostgresStore

    store = PostgresStore(url, flush_seconds=NEVER, flush_records=10**6, spool_dir=tmp_path)
    doc = {"ts": "2026-12-01T00:00:00Z", "variant": "control", "inference_time_ms": 1.0,
           "confidence": 0.5, "error": False}
    good = {f"g{i}" for i in range(101)}
    for i in range(101):
        store.append("ab/t", {**doc, "user_id": f"g{i}"})
        if i == 50:
            store.append("ab/t", {**doc, "user_id": "bad\x00user"})
    store.flush()
    assert set(assert_once(url, good)) == good
    assert store.rejected == 1
    err = capfd.readouterr().err
    assert "refused a record of ab/t" in err and "set aside" in err
    (kept,) = tmp_path.glob("*.rejected.jsonl")
    assert "bad\\u0000user" in kept.read_text()
    store.append("ab/t", {**doc, "user_id": "later"})  # later flushes are not poisoned
    store.flush()
    assert set(assert_once(url, good | {"later"})) == good | {"later"}
    store.close()


def test_project_is_a_context_manager_that_writes_what_it_buffered(
    url: str, no_timed_flush: None
) -> None:
    with Project.open(url) as project:
        for i in range(20):
            record(project, f"c{i}")
        assert stored_users(url) == []
        project.flush()
        assert len(stored_users(url)) == 20
        record(project, "last")
    assert set(assert_once(url, {f"c{i}" for i in range(20)} | {"last"})) == (
        {f"c{i}" for i in range(20)} | {"last"}
    )


def test_a_chunk_whose_commit_reply_was_lost_is_stored_once(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from mlops_cli.errors import ServiceError
    from mlops_cli.store.postgres import PostgresStore, buffer

    real = buffer.write_chunk
    calls = []

    def commit_then_lose_the_reply(conn: Any, chunk: Any) -> int:
        calls.append(chunk.batch_id)
        written = real(conn, chunk)
        if len(calls) == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return written

    monkeypatch.setattr(buffer, "write_chunk", commit_then_lose_the_reply)
    store = PostgresStore(url, flush_seconds=NEVER, flush_records=10**6, spool_dir=tmp_path)
    doc = {"ts": "2026-12-01T00:00:00Z", "variant": "control", "inference_time_ms": 1.0,
           "confidence": 0.5, "error": False}
    for i in range(40):
        store.append("ab/t", {**doc, "user_id": f"u{i}"})
    with pytest.raises(ServiceError, match="retry"):
        store.flush()  # committed, but this process could not know
    assert store.buffered == 40
    store.flush()  # the same chunk, the same batch id: found, not written again
    assert calls[0] == calls[1]
    assert store.buffered == 0
    assert set(assert_once(url, {f"u{i}" for i in range(40)})) == {f"u{i}" for i in range(40)}
    store.close()
