"""The PostgreSQL buffer's decisions without a server: which signal handlers it installs, the
spool's files, and the bound."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("psycopg")

from mlops_cli.errors import BufferFullError
from mlops_cli.store.postgres import buffer, spool


@pytest.fixture
def handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_default_handlers_are_replaced_and_a_hosts_is_chained(handlers: None) -> None:
    calls = []

    def host(signum: int, frame: Any) -> None:
        calls.append(signum)

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, host)
    buffer.install_signal_handlers()
    assert signal.getsignal(signal.SIGTERM) is buffer._on_signal
    chained = signal.getsignal(signal.SIGINT)
    assert isinstance(chained, buffer._Chained) and chained.host is host
    chained(signal.SIGINT, None)
    assert calls == [signal.SIGINT]  # the host's handler still runs
    buffer.install_signal_handlers()  # twice: nothing wrapped twice
    assert signal.getsignal(signal.SIGINT) is chained


def test_an_ignored_signal_stays_ignored_and_sigints_default_is_replaced(handlers: None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    buffer.install_signal_handlers()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is buffer._on_signal


def test_a_signal_during_a_drain_waits_for_its_end(
    handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(buffer, "_hooked", os.getpid())  # this process buffered records
    with pytest.raises(KeyboardInterrupt), buffer.draining():
        buffer._on_signal(signal.SIGINT, None)  # returns: the drain goes on
        assert buffer._signalled == signal.SIGINT
    assert buffer._signalled is None


_DRAIN_IN_A_THREAD = """
import os, signal, sys, threading, time
from mlops_cli.store.postgres import buffer

signal.signal(signal.SIGTERM, buffer._on_signal)
buffer._hooked = os.getpid()  # this process buffered records
main = threading.main_thread().ident


def closing() -> None:  # a store closed in another thread: its drain holds SIGTERM back
    with buffer.draining():
        signal.pthread_kill(main, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while buffer._signalled is None and time.monotonic() < deadline:
            time.sleep(0.01)


worker = threading.Thread(target=closing)
worker.start()
while worker.is_alive():
    time.sleep(0.01)
time.sleep(0.5)  # a signal sent to this thread at the drain's end is handled here
print("survived")
"""


def test_a_sigterm_held_back_by_a_drain_in_another_thread_still_ends_the_process() -> None:
    """The drain's end acts on the signal; from a thread that is not the main one (which may
    not change a handler) it is sent on to the main thread, whose handler ends the process."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _DRAIN_IN_A_THREAD], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGTERM, (done.returncode, done.stdout, done.stderr)
    assert "survived" not in done.stdout


def test_a_helper_thread_starts_deaf_to_sigterm_and_sigint() -> None:
    """The flusher's and the registry listener's threads: the kernel hands SIGTERM and SIGINT
    to the main thread, whose waits they must interrupt; the starter's mask is as it was."""
    seen: list[set[int]] = []
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    thread = threading.Thread(target=lambda: seen.append(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
    buffer.start_deaf(thread)
    thread.join(60)
    assert {signal.SIGTERM, signal.SIGINT} <= seen[0]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


class _StuckOwner:
    """An inherited store whose drain would never end (its lock held by a parent's thread)."""

    def drain(self) -> None:
        threading.Event().wait()

    def forget_parent(self) -> None:
        pass

    def wake(self) -> None:
        pass


def _idle(ready: Any) -> None:
    ready.set()
    threading.Event().wait()  # an idle pool worker, blocked until it is ended


def test_a_forked_child_that_never_buffered_dies_of_sigterm_at_once(handlers: None) -> None:
    """An idle pool worker inherits the handler and its parent's stores: SIGTERM ends it by the
    default action without draining them (`with Pool()` would otherwise wait on it forever)."""
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    signal.signal(signal.SIGTERM, buffer._on_signal)
    stuck = _StuckOwner()
    buffer.OWNERS.add(stuck)
    try:
        ready = fork.Event()
        child = fork.Process(target=_idle, args=(ready,))
        child.start()
        assert ready.wait(120)
        child.terminate()
        child.join(120)  # only catches a hang
        if child.exitcode is None:
            child.kill()
            child.join()
        assert child.exitcode == -signal.SIGTERM
    finally:
        buffer.OWNERS.discard(stuck)


def test_handlers_are_installed_only_from_the_main_thread(
    handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(buffer, "_hooked", None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    thread = threading.Thread(target=buffer.hook_process)
    thread.start()
    thread.join()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def _rows() -> list[tuple[Any, ...]]:
    ts = datetime(2026, 12, 1, 12, 30, 5, 250000, tzinfo=timezone.utc)
    return [
        ("t", "control", "u\tser", False, 1.5, 0.25, True, ts, 2),  # ts, then the ramp step
        ("t", "x", None, False, 2.0, 1.0, False, ts, None),
    ]


def test_spooled_chunks_come_back_as_written_and_are_claimed_once(tmp_path: Path) -> None:
    url = "postgresql://svc:secret@db.example:5432/mlops"
    chunk = spool.Chunk("ab/t", _rows())
    path = spool.write_spool(tmp_path / "s", url, [chunk])
    assert "secret" not in path.read_text()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(tmp_path / "s").st_mode & 0o777) == "0o700"
    # Another password, the same store; another database, another store.
    assert list(spool.claim_spooled(tmp_path / "s", url.replace("/mlops", "/other"))) == []
    claimed = list(spool.claim_spooled(tmp_path / "s", url.replace("secret", "rotated")))
    assert len(claimed) == 1
    where, (back,) = claimed[0]
    assert (back.stream, back.batch_id, back.rows) == (chunk.stream, chunk.batch_id, chunk.rows)
    assert list(spool.claim_spooled(tmp_path / "s", url)) == []  # claimed: not twice
    spool.release(where)
    assert len(list(spool.claim_spooled(tmp_path / "s", url))) == 1  # given back


def test_the_default_spool_is_private_to_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(spool.SPOOL_ENV, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", "/state")
    assert spool.spool_dir() == Path("/state/mlops/spool")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", "/home/u")
    assert spool.spool_dir() == Path("/home/u/.local/state/mlops/spool")
    monkeypatch.setenv(spool.SPOOL_ENV, "/var/spool/mine")
    assert spool.spool_dir() == Path("/var/spool/mine")


def test_the_bound_refuses_the_record_beyond_it_and_keeps_the_others(
    tmp_path: Path, handlers: None
) -> None:
    lock = threading.RLock()

    def unreachable() -> Any:
        raise AssertionError("add() never connects")

    buf = buffer.Buffer("postgresql://h/db", lock, unreachable, spool_dir=tmp_path,
                        flush_records=10**6, flush_seconds=3600, max_records=3)
    for row in _rows() + _rows()[:1]:
        buf.add("ab/t", row)
    with pytest.raises(BufferFullError, match=r"^3 records wait"):
        buf.add("ab/t", _rows()[0])
    assert buf.held == 3
    buf.stop()


def test_a_closed_buffer_refuses_a_record_in_one_line(tmp_path: Path) -> None:
    from mlops_cli.errors import ServiceError

    buf = buffer.Buffer("postgresql://u:pw@h/db", threading.RLock(), lambda: None,
                        spool_dir=tmp_path)
    buf.drain()  # nothing held: stopped without connecting
    with pytest.raises(ServiceError, match=r"^the PostgreSQL store postgresql://u:\*\*\*@h/db is closed"):
        buf.add("ab/t", _rows()[0])
    assert buf.held == 0


def test_appends_inside_a_registry_transaction_never_wait_for_the_flusher(
    tmp_path: Path, handlers: None
) -> None:
    # The flusher is stuck (the transaction's thread holds the connection); beyond the
    # backlog a call would wait for it (flush_seconds = an hour), except here.
    stuck = threading.Event()

    def connection() -> Any:
        stuck.wait(120)
        raise RuntimeError("the flusher waited on the connection")

    buf = buffer.Buffer("postgresql://h/db", threading.RLock(), connection, spool_dir=tmp_path,
                        may_wait=lambda: False, flush_records=1, flush_seconds=3600)
    adder = threading.Thread(target=lambda: [buf.add("ab/t", r) for r in _rows() * 3])
    adder.start()
    adder.join(60)  # a deadline that only catches the wait
    finished = not adder.is_alive()
    stuck.set()
    buf.stop()
    assert finished and buf.held == 6
