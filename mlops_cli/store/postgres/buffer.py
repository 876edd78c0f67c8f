"""The per-request buffer of sample records and its flushing: one per store and process.

`add()` takes only the buffer's own lock, so a per-request call never waits on the network. A
background thread writes what waits once `flush_records` records wait or the oldest has waited
`flush_seconds`: each stream's records as one chunk, in one transaction that first inserts the
chunk's batch id into `batches` (`ON CONFLICT DO NOTHING`), so a chunk whose commit was cut off
is written again and lands once. While the server is away records are kept, up to `max_records`;
beyond, `add()` raises BufferFullError. A chunk PostgreSQL refuses for its data is halved until
the refused record is found: it is set aside (a warning on stderr, counted in `rejected`, kept in
the spool directory's rejected file) and the others are written.

At the end of a process (interpreter exit, a multiprocessing worker's end, SIGTERM or SIGINT,
`close()`) `drain()` writes what waits on a connection of its own; when the server cannot be
reached, it goes to a private spool file that the next open of the same URL replays (spool.py).
Only kill -9 and power loss lose records: what waits, at most `flush_seconds` or
`flush_records` of them (docs/postgresql.md).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import psycopg
from psycopg.pq import TransactionStatus

from ...errors import BufferFullError, MlopsError, ServiceError
from . import spool
from .connection import connect, redact, translated
from .copy import COUNT_SQL, copy_rows
from .rows import route
from .spool import Chunk

FLUSH_RECORDS = 1000  # a stream is written when this many records wait
FLUSH_SECONDS = 1.0  # ... or when the oldest has waited this long (and retried as often)
MAX_BUFFERED = 100_000  # records held while the server is away; beyond, add() refuses
BACKLOG = 2  # x flush_records: a process recording faster than its flusher writes waits here
RETRY_S = 1.0  # while the server is away, a write is tried this often
EXIT_WAIT_S = 10.0  # at the end, how long to wait for a write in progress before spooling


def write_chunk(conn: psycopg.Connection[Any], chunk: Chunk) -> int:
    """Write a chunk in one transaction, once per batch id: the records written (0 when an
    earlier try had committed it)."""
    table, _ = route(chunk.stream)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "INSERT INTO batches (stream, batch_id, records) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            [chunk.stream, chunk.batch_id, len(chunk.rows)],
        )
        if cur.fetchone() is None:
            return 0
        copy_rows(cur, table, chunk.rows)
        cur.execute(COUNT_SQL, [chunk.stream, len(chunk.rows), len(chunk.rows)])
    return len(chunk.rows)


def write_queue(
    conn: psycopg.Connection[Any],
    queue: collections.deque[Chunk],
    mutex: threading.RLock,
    only: str | None,
    set_aside: Callable[[Chunk, str], None],
    written: Callable[[int], None],
) -> None:
    """Write the chunks of a queue, oldest first (of one stream, or all). A chunk refused for
    its data (a DataError: a NUL byte, a time out of range) is replaced by its halves until the
    refused record is alone, which goes to `set_aside`. Other failures propagate, leaving the
    chunk queued with its batch id."""
    while True:
        with mutex:
            chunk = next((c for c in queue if only is None or c.stream == only), None)
        if chunk is None:
            return
        try:
            write_chunk(conn, chunk)
        except psycopg.DataError as exc:
            reason = (exc.diag.message_primary or str(exc)).strip()
            with mutex:
                at = _index(queue, chunk)
                if at is None:
                    continue  # written meanwhile by another writer
                del queue[at]
                if len(chunk.rows) == 1:
                    set_aside(chunk, reason)
                    continue
                half = len(chunk.rows) // 2
                queue.insert(at, Chunk(chunk.stream, chunk.rows[half:], f"{chunk.batch_id}.1"))
                queue.insert(at, Chunk(chunk.stream, chunk.rows[:half], f"{chunk.batch_id}.0"))
            continue
        with mutex:
            at = _index(queue, chunk)
            if at is not None:
                del queue[at]
                written(len(chunk.rows))


def _index(queue: collections.deque[Chunk], chunk: Chunk) -> int | None:
    for i, c in enumerate(queue):
        if c is chunk:
            return i
    return None


class Buffer:
    """The records a store's process has acknowledged and not yet written."""

    def __init__(
        self,
        url: str,
        lock: threading.RLock,
        connection: Callable[[], psycopg.Connection[Any]],
        tick: Callable[[], None] = lambda: None,
        may_wait: Callable[[], bool] = lambda: True,
        spool_dir: Path | None = None,
        flush_records: int = FLUSH_RECORDS,
        flush_seconds: float = FLUSH_SECONDS,
        max_records: int = MAX_BUFFERED,
    ) -> None:
        self.url = url
        self.shown = redact(url)
        self.flush_records = flush_records
        self.flush_seconds = flush_seconds
        self.max_records = max_records
        self.spool_dir = spool_dir if spool_dir is not None else spool.spool_dir()
        self.rejected = 0  # records the server refused, set aside
        self._lock = lock  # the store's: its connection
        self._connection = connection
        self._tick = tick
        self._may_wait = may_wait  # false while this thread holds the connection
        self._mutex = threading.RLock()  # the rows (re-entered by a signal handler's drain)
        self._wake = threading.Condition(self._mutex)  # the flusher waits for work
        self._progress = threading.Condition(self._mutex)  # add() waits for the flusher
        self._pending: dict[str, list[tuple[Any, ...]]] = {}
        self._waiting = 0  # records in _pending
        self._chunks: collections.deque[Chunk] = collections.deque()
        self._held = 0  # records in _pending and _chunks
        self._oldest = 0.0
        self._retry_at = 0.0
        self._wanted = False
        self._stopped = False
        self._outage: str | None = None
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> int:
        """Records acknowledged and not yet written."""
        return self._held

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def add(self, stream: str, row: tuple[Any, ...]) -> None:
        """Keep a row for the flusher; BufferFullError (the row not kept) when the buffer is
        at its bound."""
        with self._mutex:
            if self._stopped:
                raise ServiceError(
                    f"the PostgreSQL store {self.shown} is closed: this record was not recorded"
                )
            if self._held >= self.max_records:
                raise BufferFullError(
                    f"{self._held} records wait for the PostgreSQL store {self.shown}, the "
                    f"most a process keeps ({self._outage or 'it is not reachable'}): this "
                    "one was not recorded"
                )
            rows = self._pending.get(stream)
            if rows is None:
                rows = self._pending[stream] = []
            rows.append(row)
            if not self._held:
                self._oldest = time.monotonic()
            self._held += 1
            self._waiting += 1
            if self._waiting >= self.flush_records:
                self._wake.notify()
            if self._thread is None and not self._stopped:
                self._start()
            elif (
                self._held >= BACKLOG * self.flush_records
                and self._outage is None
                and self._may_wait()
            ):
                # Recording faster than the server takes it: wait (at most flush_seconds)
                # for the flusher, so what a kill -9 can lose stays about one flush.
                self._progress.wait_for(self._caught_up, self.flush_seconds)

    def _caught_up(self) -> bool:
        return (
            self._held < BACKLOG * self.flush_records
            or self._outage is not None
            or self._stopped
            or not self.running
        )

    def wake(self) -> None:
        """Ask the flusher for a round now (it also runs `tick`)."""
        with self._mutex:
            self._wanted = True
            self._wake.notify()

    def _start(self) -> None:
        hook_process()
        self._thread = threading.Thread(target=self._run, name="mlops-pg-flush", daemon=True)
        start_deaf(self._thread)

    def _due_in(self) -> float | None:
        """Seconds until the next round (0: now; None: nothing to do)."""
        now = time.monotonic()
        if self._retry_at > now and not self._stopped:
            return self._retry_at - now
        if self._wanted or self._waiting >= self.flush_records:
            return 0.0
        if self._held:
            return max(0.0, self._oldest + self.flush_seconds - now)
        return None

    def _run(self) -> None:
        while True:
            with self._mutex:
                while not self._stopped:
                    due = self._due_in()
                    if due is not None and due <= 0:
                        break
                    self._wake.wait(due)
                if self._stopped:
                    return
                self._wanted = False
            try:
                self._tick()
                if self._held:
                    self.write()
            except MlopsError as exc:
                self._failed(str(exc))
            except Exception as exc:  # never let the flusher die: report and retry
                self._failed(f"{type(exc).__name__}: {exc}")

    def _failed(self, reason: str) -> None:
        with self._mutex:
            self._retry_at = time.monotonic() + min(self.flush_seconds, RETRY_S)
            first = self._outage is None
            self._outage = reason
            self._progress.notify_all()
        if first:
            warn(
                f"cannot write to the PostgreSQL store ({reason}); {self._held} records are "
                f"kept in this process (at most {self.max_records}) and written when it is back"
            )

    def _seal(self, only: str | None) -> None:
        with self._mutex:
            for stream in [only] if only is not None else list(self._pending):
                rows = self._pending.pop(stream, None)
                if rows:
                    self._chunks.append(Chunk(stream, rows))
                    self._waiting -= len(rows)

    def _written(self, count: int) -> None:
        self._held -= count
        if not self._held:
            self._oldest = 0.0
        self._progress.notify_all()

    def _set_aside(self, chunk: Chunk, reason: str) -> None:
        self._written(1)
        self._reject(chunk, reason)

    def _reject(self, chunk: Chunk, reason: str) -> None:
        self.rejected += 1
        try:
            where = f"kept in {spool.reject(self.spool_dir, self.url, chunk, reason)}"
        except OSError as exc:
            where = f"and could not be kept ({exc}): {chunk.rows[0]!r}"
        warn(
            f"the PostgreSQL store {self.shown} refused a record of {chunk.stream} ({reason}); "
            f"it is set aside {where}; the other records are written"
        )

    def write(self, only: str | None = None) -> None:
        """Write what waits (of one stream, or all) on the store's connection, now; a
        ServiceError when the server cannot be reached (the records stay buffered). Inside a
        registry transaction nothing is written (a rollback must not take them along)."""
        with self._lock, translated(self.url, "writing buffered records"):
            conn = self._connection()
            if conn.info.transaction_status != TransactionStatus.IDLE:
                return
            self._seal(only)
            write_queue(conn, self._chunks, self._mutex, only, self._set_aside, self._written)
        with self._mutex:
            if self._outage is not None and not self._held:
                self._outage = None
                self._retry_at = 0.0

    def stop(self, wait_s: float = EXIT_WAIT_S) -> None:
        """Stop the flusher (waiting for a round in progress up to `wait_s`)."""
        with self._mutex:
            self._stopped = True
            self._wake.notify()
            self._progress.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait_s)

    def drain(self, wait_s: float = EXIT_WAIT_S) -> None:
        """The end of the process (or of the store): stop the flusher, write what waits on a
        connection of its own, and spool what cannot be written. Never raises."""
        self.stop(wait_s)
        if not self._held:
            return
        reason = "not tried"
        got = self._lock.acquire(timeout=wait_s)
        try:
            self._seal(None)
            # Its own connection: the store's may be in the middle of a call this drain
            # interrupted (a signal handler runs between two bytecodes of the main thread).
            with translated(self.url, "writing buffered records"), connect(self.url) as conn:
                conn.execute("SELECT set_config('lock_timeout', %s, false)", [f"{int(wait_s)}s"])
                write_queue(conn, self._chunks, self._mutex, None, self._set_aside, self._written)
        except (MlopsError, psycopg.Error, OSError) as exc:
            reason = str(exc)
        finally:
            if got:
                self._lock.release()
        if self._held:
            self._spool(reason)

    def _spool(self, reason: str) -> None:
        with self._mutex:
            self._seal(None)
            chunks = list(self._chunks)
            count = sum(len(c.rows) for c in chunks)
            if not count:  # written by a drain this one interrupted
                self._held = 0
                return
            try:
                path = spool.write_spool(self.spool_dir, self.url, chunks)
            except OSError as exc:
                warn(
                    f"{count} records for the PostgreSQL store {self.shown} are lost: it could "
                    f"not be reached ({reason}) and the spool failed ({exc})"
                )
                return
            self._chunks.clear()
            self._held = 0
        warn(
            f"the PostgreSQL store {self.shown} could not be reached ({reason}): {count} records "
            f"are spooled to {path}; the next open of the store writes them"
        )

    def replay(self, conn: psycopg.Connection[Any]) -> int:
        """Write the records spooled for this store by processes that ended with the server
        away, each chunk once; the records written."""
        total = 0
        for path, chunks in spool.claim_spooled(self.spool_dir, self.url):
            queue = collections.deque(chunks)
            count = sum(len(c.rows) for c in chunks)
            try:
                write_queue(conn, queue, self._mutex, None, self._reject, lambda n: None)
            except BaseException:
                spool.release(path)
                raise
            path.unlink()
            total += count
        return total


def warn(message: str) -> None:
    try:
        sys.stderr.write(f"mlops: warning: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed at exit
        pass


# -- the process: fork, exit, multiprocessing workers, signals --------------------------------


def start_deaf(thread: threading.Thread) -> None:
    """Start a helper thread with SIGTERM and SIGINT blocked in it, so the kernel hands them to
    another thread, the main one where nothing else blocks them. Python runs its handlers in
    the main thread only, and only a signal delivered to that thread interrupts a wait there:
    one taken by a helper thread leaves a main thread blocked on a lock or a queue where it
    was (a pool worker idle on its queue would outlive Pool.terminate)."""
    if not hasattr(signal, "pthread_sigmask"):
        thread.start()
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        thread.start()  # the new thread starts with this thread's mask
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)



class Owner(Protocol):
    """What the process hooks need of a store."""

    def drain(self) -> None: ...

    def forget_parent(self) -> None: ...

    def wake(self) -> None: ...


OWNERS: weakref.WeakSet[Owner] = weakref.WeakSet()  # the stores open in this process
_hooked: int | None = None  # the process whose exit and signals are hooked
_draining = 0  # drains in progress in this process
_signalled: int | None = None  # a signal that arrived during one: acted on at its end


@contextlib.contextmanager
def draining() -> Iterator[None]:
    """Around a drain: SIGTERM or SIGINT arriving meanwhile is acted on once it is done (a
    second drain in the handler would wait on the rows the first is committing)."""
    global _draining
    _draining += 1
    try:
        yield
    finally:
        _draining -= 1
        if not _draining and _signalled is not None:
            _die_of(_signalled)


def drain_all() -> None:
    """Write (or spool) what every store of this process holds."""
    with draining():
        for owner in list(OWNERS):
            owner.drain()


def _after_fork_in_child() -> None:
    global _hooked, _draining, _signalled
    _hooked, _draining, _signalled = None, 0, None
    for owner in list(OWNERS):
        owner.forget_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(drain_all)


def hook_process() -> None:
    """Once per process, when its first record is buffered: drain at a multiprocessing
    worker's end (pool workers and Process targets leave through os._exit, after running
    multiprocessing's finalizers), and on SIGTERM/SIGINT where no one else handles them."""
    global _hooked
    if _hooked == os.getpid():
        return
    _hooked = os.getpid()
    if "multiprocessing" in sys.modules:
        from multiprocessing import util

        util.Finalize(None, drain_all, exitpriority=100)
    if threading.current_thread() is threading.main_thread():
        install_signal_handlers()


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT where the handler is the default: SIGTERM drains, then the process
    dies of it as by default; SIGINT wakes the flushers and raises KeyboardInterrupt (the exit
    drains). Where the host installed one (uvicorn, gunicorn, the mlops command): wake the
    flushers and call it; its exit reaches the atexit drain."""
    for signum, default in (
        (signal.SIGTERM, signal.SIG_DFL),
        (signal.SIGINT, signal.default_int_handler),
    ):
        current = signal.getsignal(signum)
        if current is _on_signal or isinstance(current, _Chained):
            continue
        if current == default:
            signal.signal(signum, _on_signal)
        elif callable(current):
            signal.signal(signum, _Chained(current))


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _signalled
    if _hooked != os.getpid():
        # A forked child that inherited the handler and never buffered a record (an idle
        # pool worker): nothing of its own to write, and the stores it inherited are its
        # parent's, so it ends at once, as by default, without touching them.
        _die_of(signum)
    if _draining:  # a drain (at exit, a worker's end, close()) was interrupted: let it end
        _signalled = signum
        return
    if signum == signal.SIGINT:
        # KeyboardInterrupt: the exit it leads to drains (atexit, a worker's finalizer); a
        # host that catches it goes on recording with its buffer intact.
        _wake_all()
        raise KeyboardInterrupt
    drain_all()  # may not return: a signal during it is acted on at its end
    _die_of(signum)


def _wake_all() -> None:
    for owner in list(OWNERS):
        owner.wake()


def _die_of(signum: int) -> None:
    """What the default handler does: raise KeyboardInterrupt, or end by the signal. From
    another thread (a drain it ran held the signal back): the signal goes to the main thread,
    whose handler then acts on it (only the main thread may change a handler)."""
    global _signalled
    _signalled = None
    if threading.current_thread() is not threading.main_thread():
        signal.pthread_kill(threading.main_thread().ident or 0, signum)
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # only if the signal could not end the process


class _Chained:
    """A host's handler, called after the flushers are woken."""

    def __init__(self, host: Callable[[int, FrameType | None], Any]) -> None:
        self.host = host

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        _wake_all()
        return self.host(signum, frame)
