"""The per-request buffer of sample records and its flushing."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from ...errors import (
    MlopsError,
)
from .copy import COUNT_SQL, copy_rows
from .rows import route

FLUSH_RECORDS = 1000  # a buffered stream is written when this many records wait
FLUSH_SECONDS = 1.0  # ... or when the oldest has waited this long
MAX_BUFFERED = 100_000  # records held while the server is away; beyond, append() fails

OPEN: weakref.WeakSet[BufferedAppends] = weakref.WeakSet()


def _forget_parents() -> None:
    for store in list(OPEN):
        store._forget_parent()


os.register_at_fork(after_in_child=_forget_parents)


@atexit.register
def _flush_at_exit() -> None:
    for store in list(OPEN):
        with contextlib.suppress(MlopsError):  # the server is gone: the documented loss
            store.flush()


class BufferedAppends:
    """The buffer of a PostgresStore: sample records wait here and are written with one COPY
    per stream (see the package docstring)."""

    location: str
    _lock: threading.RLock
    _buffers: dict[str, list[tuple[Any, ...]]]
    _buffered: int
    _oldest: float
    _flusher: threading.Thread | None
    _stop: threading.Event
    _retry_at: float

    @property
    def conn(self) -> psycopg.Connection[Any]:
        raise NotImplementedError

    def _translated(self, doing: str) -> Any:
        raise NotImplementedError

    def _forget_parent(self) -> None:
        raise NotImplementedError

    def _buffer_row(self, stream: str, row: tuple[Any, ...]) -> None:
        with self._lock:
            buffer = self._buffers.get(stream)
            if buffer is None:
                buffer = self._buffers[stream] = []
            if not self._buffered:
                self._oldest = time.monotonic()
            buffer.append(row)
            self._buffered += 1
            if self._buffered >= FLUSH_RECORDS and time.monotonic() >= self._retry_at:
                try:
                    self._flush_locked()
                except MlopsError:
                    # The server is away: keep the records and retry in a second; refuse
                    # (and drop this record) only when the buffer is full.
                    self._retry_at = time.monotonic() + FLUSH_SECONDS
                    if self._buffered >= MAX_BUFFERED:
                        buffer.pop()
                        self._buffered -= 1
                        raise
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_loop, name="mlops-pg-flush", daemon=True
                )
                self._flusher.start()

    def flush(self, stream: str | None = None) -> None:
        """Write buffered records (of one stream, or all) now."""
        with self._lock:
            self._flush_locked(stream)

    def _flush_locked(self, only: str | None = None) -> None:
        if not self._buffered:
            return
        with self._translated("connecting"):
            conn = self.conn
        if conn.info.transaction_status != TransactionStatus.IDLE:
            return  # inside a registry transaction: a rollback must not take these rows along
        for stream in [only] if only is not None else list(self._buffers):
            rows = self._buffers.get(stream)
            if not rows:
                continue
            table, _keys = route(stream)
            with self._translated(f"writing buffered records of {stream}"):
                conn = self.conn
                with conn.transaction(), conn.cursor() as cur:
                    copy_rows(cur, table, rows)
                    cur.execute(COUNT_SQL, [stream, len(rows), len(rows)])
            del self._buffers[stream]
            self._buffered -= len(rows)
        if not self._buffered:
            self._oldest = 0.0

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS / 4):
            with self._lock:
                if self._buffered and time.monotonic() - self._oldest >= FLUSH_SECONDS:
                    # On failure the rows stay buffered; the next flush retries and reports.
                    with contextlib.suppress(MlopsError):
                        self._flush_locked()
