"""The registry snapshot of a PostgreSQL project: told of changes by LISTEN/NOTIFY, with a poll.

Every registry transaction bumps the `settings` row (a new row version, so a new `xmin`: the
registry's *generation*) and sends `NOTIFY mlops_registry`; both take effect at its commit.
Each process holds one snapshot per project (store/snapshot.py) and one `Listener`: a daemon
thread with its own connection that LISTENs, invalidates the snapshot on each notification,
and reads the generation every `POLL_S` seconds as a fallback (a notification is lost while
its connection is down). So a change committed elsewhere reaches a process at its notification
(milliseconds), and at worst within `POLL_S` plus one read of the registry; a change committed
in the process invalidates the snapshot at once. The per-request calls never wait on the
network for it: only the first call after a change reads the registry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

import psycopg

from ...errors import ServiceError
from ..snapshot import Loader, Snapshot
from .buffer import start_deaf

CHANNEL = "mlops_registry"
POLL_S = 1.0
LISTENERS = 8  # per process, each with a connection; beyond, the oldest stops (polls remain)
_running: list[Listener] = []
_running_mutex = threading.Lock()
GENERATION_SQL = "SELECT xmin::text FROM settings WHERE id = 1"
# Run inside every registry transaction: visible to others only when it commits.
BUMP_SQL = "UPDATE settings SET updated_at = now() WHERE id = 1"
NOTIFY_SQL = f"NOTIFY {CHANNEL}"


def watched_snapshot(
    url: str,
    load: Loader,
    read_generation: Callable[[], str | None],
    check_every_s: float = POLL_S,
    clock: Callable[[], float] = time.monotonic,
    listen: bool = True,
) -> Snapshot:
    """A project's snapshot polling `read_generation` every `check_every_s` of `clock` and,
    with `listen`, told of changes by a `Listener` (whose last generation it then uses, with
    no round trip). While the server is away it keeps serving the state it holds."""
    listener: Listener | None = None

    def current() -> str | None:
        if listener is not None and listener.listening:
            return listener.generation
        return read_generation()

    snap = Snapshot(load, current, check_every_s, clock, keep_on=(ServiceError,))
    if listen:
        listener = Listener(url, snap.invalidate, lambda: snap.generation)
        snap.on_close = listener.close
        listener.start()
    return snap


def generation(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute(GENERATION_SQL).fetchone()
    return None if row is None else str(row[0])


class Listener:
    """A daemon thread that calls `changed()` when the registry changes (see the module):
    at a notification, or when the generation it reads differs from `known()`, the one the
    snapshot holds."""

    def __init__(
        self,
        url: str,
        changed: Callable[[], None],
        known: Callable[[], Hashable],
        poll_s: float = POLL_S,
    ) -> None:
        self.url = url
        self.changed = changed
        self.known = known
        self.poll_s = poll_s
        self.generation: str | None = None  # the last generation read, None while away
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlops-registry", daemon=True)

    def start(self) -> None:
        with _running_mutex:
            _running[:] = [r for r in _running if not r.stopped]
            _running.append(self)
            oldest = _running.pop(0) if len(_running) > LISTENERS else None
        if oldest is not None:
            oldest.stop()  # its snapshot keeps its poll
        start_deaf(self._thread)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def listening(self) -> bool:
        return self._thread.is_alive() and self.generation is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listen(conn)
            except psycopg.Error:
                self.generation = None
                self._stop.wait(self.poll_s)  # the server is away: the store says so itself

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        told = False  # first, what happened while nobody listened: the generation
        while not self._stop.is_set():
            self.generation = generation(conn)
            if told or self.generation != self.known():
                self.changed()
            told = False
            for _ in conn.notifies(timeout=self.poll_s, stop_after=1):
                told = True

    def close(self) -> None:
        """Stop: the thread ends at its next wake-up (at most `poll_s`), closing its
        connection; nobody waits for it (a daemon thread)."""
        self.stop()
