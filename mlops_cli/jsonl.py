"""Append-only JSONL logs: whole-line appends under the log's lock, torn-tail safe reads.

Each log is locked with flock(2) on the log file itself, so a lock is released by the kernel
when its holder dies: a killed writer never leaves a lock behind. A log whose last line has no
newline was torn by a crash: readers stop before that tail and report it; the next writer
truncates it under the lock before appending.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from . import safefs
from .errors import SKIP_INVALID, BatchConflictError, LockTimeoutError, StateError
from .limits import LINE_MAX_BYTES

_BLOCK = 1 << 16
PROGRESS_BYTES = 32 << 20  # a batch's journal records its lines written at least this often


def utc_now() -> str:
    """The current time as the UTC ISO-8601 string every log line carries in `ts`."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# orjson (with the json module it loads, 2 ms) is imported on first use, not at start-up:
# `mlops list` on a project without logs never needs it.


def dumps(doc: Any) -> bytes:
    import orjson

    return orjson.dumps(doc)


def loads(data: bytes | memoryview) -> Any:
    """A JSON document; orjson.JSONDecodeError (a ValueError) when it is not one."""
    import orjson

    return orjson.loads(data)


def dumps_line(record: dict[str, Any]) -> bytes:
    import orjson  # (per request: not through `dumps`)

    return orjson.dumps(record) + b"\n"


@contextmanager
def flocked(fd: int, path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive flock on `fd`, waiting at most `timeout` seconds for it."""
    lock(fd, path, timeout)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def lock(fd: int, path: Path, timeout: float) -> None:
    """Take an exclusive flock on `fd`, waiting at most `timeout` seconds (LockTimeoutError)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        deadline = time.monotonic() + timeout
        # Another process's append holds it for microseconds: look again soon, then less often
        # (a 0.5 ms first wait was the p99 of a request under 4 web workers).
        delay = 0.00005
        while True:
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"could not lock {path} within {timeout:g} s: another mlops process "
                        "holds it; retry, or raise the setting lock_timeout_s"
                    ) from None


def _truncate_torn_tail(fd: int, size: int | None = None) -> int:
    """Cut a last line that has no newline; return the bytes removed (0 for a whole log).
    `size`: the log's size, when the caller holding the lock has it."""
    if size is None:
        size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    end = size
    while end > 0:
        start = max(0, end - _BLOCK)
        chunk = os.pread(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            keep = start + cut + 1
            os.ftruncate(fd, keep)
            return size - keep
        end = start
    os.ftruncate(fd, 0)
    return size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


_LOGS: weakref.WeakSet[AppendLog] = weakref.WeakSet()


class AppendLog:
    """One log kept open for appends: a per-request append is four system calls (flock,
    fstat, write, unlock) on a descriptor opened once.

    Each append checks, under the log's lock, what the write-safety rules need: a log replaced
    or removed since it was opened (no links left) is reopened and the record goes to the new
    file; one that gained a second hard link is refused; a torn last line another writer left
    is cut (its last byte is read only when the log is not where this object's last append
    left it). A forked child never uses its parent's descriptor (its flock would be the
    parent's): it opens its own.
    """

    def __init__(self, path: Path, root: Path | None = None) -> None:
        self.path = path
        self.root = root  # the project directory: every directory from it down is checked
        self._fd: int | None = None
        self._end: int | None = None  # where this object's last append ended
        # flock excludes other open files, not threads sharing this descriptor: they queue here.
        self.mutex = threading.RLock()
        _LOGS.add(self)

    def fd(self) -> int:
        """The descriptor, opened (never through a link) when none is held; under `mutex`."""
        fd = self._fd
        if fd is None:
            fd = self._fd = safefs.open_append(self.path, self.root)
            self._end = None
        return fd

    def close(self) -> None:
        """Let the descriptor go (the next append opens the log again)."""
        with self.mutex:
            fd, self._fd, self._end = self._fd, None, None
            if fd is not None:
                os.close(fd)

    def __del__(self, _close: Callable[[int], None] = os.close) -> None:
        # A store dropped without close() (a Project not used as a context manager) must not
        # leave its descriptors open for the life of the process. (`os.close` bound at
        # definition: module globals may be gone when this runs at interpreter exit.)
        fd, self._fd = self._fd, None
        if fd is not None:
            try:  # noqa: SIM105 (contextlib may be gone at interpreter exit)
                _close(fd)
            except OSError:
                pass

    def _forked(self) -> None:
        self._fd = self._end = None  # the parent's descriptor stays the parent's
        self.mutex = threading.RLock()

    def append(
        self,
        data: bytes,
        timeout: float | Callable[[], float],
        fsync: bool = False,
        precheck: Callable[[int], None] | None = None,
    ) -> None:
        """Append whole lines (`data` ends with a newline). `timeout`: seconds to wait for a
        busy lock (a function is asked only when the lock is busy). `precheck(fd)` runs under
        the lock, after a torn tail is cut, and may refuse by raising."""
        with self.mutex:
            for _attempt in range(3):
                fd = self._fd
                if fd is None:
                    fd = self.fd()
                try:
                    fcntl.flock(fd, _LOCK_NOW)
                except BlockingIOError:
                    lock(fd, self.path, timeout() if callable(timeout) else timeout)
                try:
                    st = os.fstat(fd)
                    if st.st_nlink == 1:
                        size = st.st_size
                        if size != self._end:
                            size -= _truncate_torn_tail(fd, size)
                        if precheck is not None:
                            precheck(fd)
                        self._end = None  # unknown until the write succeeds
                        write_lines(fd, self.path, data, fsync, size)
                        self._end = size + len(data)
                        return
                    if st.st_nlink > 1:
                        safefs.check_single_link(fd, self.path, self.root)  # refused, named
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                self.close()  # replaced or removed since it was opened: open the new one
        raise StateError(f"could not append to {self.path}: it keeps being replaced")


_LOCK_NOW = fcntl.LOCK_EX | fcntl.LOCK_NB


_WRITERS: weakref.WeakSet[LogWriter] = weakref.WeakSet()


class LogWriter:
    """The logs a process appends to, each kept open (AppendLog), by path."""

    def __init__(self) -> None:
        self._logs: dict[Path, AppendLog] = {}
        _WRITERS.add(self)

    def _forked(self) -> None:
        """In a forked child: never share a lock-holding file description with the parent."""
        self._logs = {}

    def log(self, path: Path, root: Path | None = None) -> AppendLog:
        """The log at `path`, kept open for appends by this writer."""
        found = self._logs.get(path)
        if found is None:
            found = self._logs.setdefault(path, AppendLog(path, root))
        return found

    def forget(self, path: Path) -> None:
        found = self._logs.pop(path, None)
        if found is not None:
            found.close()

    def append(
        self,
        path: Path,
        data: bytes,
        timeout: float,
        fsync: bool = False,
        precheck: Callable[[int], None] | None = None,
        root: Path | None = None,
    ) -> None:
        """Append whole lines (`data` ends with a newline) to the log at `path` (AppendLog).

        `root` is the project directory: the log is opened with every directory from it down
        checked (see safefs.open_append).
        """
        self.log(path, root).append(data, timeout, fsync, precheck)

    def append_batch(
        self,
        path: Path,
        batch_id: str,
        payload: bytes,
        stamp: str,
        timeout: float,
        root: Path | None = None,
    ) -> int:
        """Append stamped lines as a batch exactly once; return how many this call appended
        (see append_stream; a retry re-stamps with the journaled stamp, these are given)."""
        return self.append_stream(path, batch_id, lambda _stamp: iter([payload]), timeout, root)[0]

    def append_stream(
        self,
        path: Path,
        batch_id: str | None,
        chunks: Callable[[str], Iterator[bytes]],
        timeout: float,
        root: Path | None = None,
        room: Callable[[int], tuple[int, int]] | None = None,
    ) -> tuple[int, int]:
        """Append a batch all or nothing and exactly once per batch id, a chunk at a time,
        holding the log's lock throughout; return (lines appended, lines an earlier attempt
        had appended).

        `chunks(stamp)` yields the batch's lines (whole, stamped with `stamp`) a chunk at a
        time and may raise after its last: then, as on any error, the log is cut back to where
        this attempt started. Before its first line, an attempt's batch id, start offset and
        stamp go to a journal beside the log. A retry of a batch a crash interrupted finds the
        lines already written (they start at the journaled offsets, written under the lock)
        and appends only the rest; a retry of a complete batch appends nothing. The stamp
        makes the retried lines byte-identical. Without an id there is no journal (nothing to
        retry). With `room(fd)` -> (held, cap): a batch taking the log past `cap` appends
        nothing and raises Overflow once every chunk was read (for the count).
        """
        log = self.log(path, root)
        for _attempt in range(3):
            new = _inode(path) == -1
            with log.mutex:
                fd = log.fd()
                with flocked(fd, path, timeout):
                    if _inode(path) == safefs.check_single_link(fd, path, root).st_ino:
                        _truncate_torn_tail(fd)
                        try:
                            return _append_chunks(fd, path, batch_id, chunks, root, room)
                        except BaseException:
                            if new and os.fstat(fd).st_size == 0:
                                # Nothing recorded: no empty log left either (this descriptor,
                                # kept, is found stale and reopened by the next append).
                                os.unlink(path)
                            raise
                log.close()  # the log was replaced since we opened it: reopen
        raise StateError(f"could not append to {path}: it keeps being replaced")


class Overflow(Exception):
    """A batch would take a capped log past its cap (nothing was appended)."""

    def __init__(self, held: int, cap: int, adding: int) -> None:
        super().__init__(f"{held} + {adding} > {cap}")
        self.held, self.cap, self.adding = held, cap, adding


class _Present:
    """Matches a batch's lines, in order, against what earlier attempts wrote (each attempt's
    part is contiguous, at its journaled start), reading the log a chunk at a time."""

    def __init__(self, fd: int, entries: list[dict[str, Any]]) -> None:
        self.fd, self.entries = fd, entries
        self.count = 0  # lines found
        self.index = -1
        self.pos = -1
        self.done = not self._next()

    def _next(self) -> bool:
        """Move to the next attempt that started at the line now expected."""
        for index in range(self.index + 1, len(self.entries)):
            entry = self.entries[index]
            if int(entry.get("first", 0)) == self.count:
                self.index, self.pos = index, int(entry["start"])
                return True
        return False

    def match(self, lines: list[bytes]) -> int:
        """How many of `lines` (the next of the batch) are present; after the first missing
        line, none more is."""
        matched = 0
        while matched < len(lines) and not self.done:
            want = sum(len(line) + 1 for line in lines[matched:])
            have = os.pread(self.fd, want, self.pos) if self.pos >= 0 else b""
            at = 0
            for line in lines[matched:]:
                end = at + len(line)
                if have[at:end] != line or have[end : end + 1] != b"\n":
                    break
                at = end + 1
                matched += 1
                self.count += 1
            self.pos += at
            if matched < len(lines) and not self._next():
                self.done = True
        return matched


def _append_chunks(
    fd: int,
    path: Path,
    batch_id: str | None,
    chunks: Callable[[str], Iterator[bytes]],
    root: Path | None,
    room: Callable[[int], tuple[int, int]] | None,
) -> tuple[int, int]:
    """The body of append_stream, under the log's lock."""
    entries = _journal(path, batch_id) if batch_id else []
    attempts = [e for e in entries if "start" in e]
    carried = [int(e["records"]) for e in entries if "records" in e]
    if carried and not attempts:  # carried whole by a copy: nothing to match
        return 0, carried[-1]
    stamp = str(attempts[0]["stamp"]) if attempts else utc_now()
    present = _Present(fd, attempts)
    known = _Recorded(batch_id, entries) if batch_id else None
    start = os.fstat(fd).st_size
    held, cap = room(fd) if room is not None else (0, 0)
    appended = 0
    over = False
    journal_size = None  # the journal's size before this attempt's entry (-1: no journal)
    unjournaled = 0  # bytes written since the journal last recorded the lines written
    try:
        for chunk in chunks(stamp):
            data = chunk
            todo = chunk.count(b"\n")
            lines: list[bytes] | None = None
            if not present.done:
                lines = chunk.split(b"\n")[:-1]
                found = present.match(lines)
                todo = len(lines) - found
                data = b"\n".join(lines[found:]) + b"\n" if todo else b""
            if known is not None:
                known.see(chunk, present.count)
                if known.refused or known.done:
                    continue  # keep reading (for the error, or to compare with the record)
            if not todo:
                continue
            appended += todo
            if room is not None and held + appended > cap:
                over = True  # keep reading: the error gives the whole count
            if over:
                continue
            if batch_id and journal_size is None:  # where this attempt's part starts
                record = {
                    "ts": utc_now(),
                    "batch": batch_id,
                    "first": present.count,
                    "start": start,
                    "stamp": stamp,
                }
                journal_size = _append_journal(path, dumps_line(record), root)
            _write_all(fd, data)
            unjournaled += len(data)
            if known is not None and unjournaled >= PROGRESS_BYTES:
                os.fsync(fd)  # durable first, then journaled as written
                _append_journal(path, known.entry(done=False), root)
                unjournaled = 0
        if known is not None:
            known.finish()
        if over:
            raise Overflow(held, cap, appended)
        if appended:
            os.fsync(fd)
        if known is not None and not known.done:
            entry = known.entry(done=True)
            size = _append_journal(path, entry, root)
            journal_size = size if journal_size is None else journal_size
    except BaseException as exc:
        os.ftruncate(fd, start)  # all or nothing: cut back what this attempt wrote
        if journal_size is not None:  # and its journal entries
            _cut_journal(path, journal_size, root)
        if isinstance(exc, OSError):
            raise StateError(f"could not append to {path}: {exc.strerror or exc}") from exc
        raise
    return appended, known.lines if known is not None and known.done else present.count


class _Recorded:
    """What the journal says a batch id recorded (its first `lines` lines, their sha256, and
    whether it completed), checked against a new attempt as its chunks go by: a retry must
    start with exactly those lines, and a completed batch id takes only the same content.
    Every PROGRESS_BYTES written (after an fsync) and at its end, the journal records the
    lines and hash of the batch so far; lines a kill left past the last record are found by
    comparing them with the log, as before."""

    def __init__(self, batch_id: str, entries: list[dict[str, Any]]) -> None:
        import hashlib  # here: importing it costs 3 ms of every A/B command's start-up

        self.batch_id = batch_id
        marks = [e for e in entries if "sha256" in e]
        last = marks[-1] if marks else {}
        self.lines = int(last.get("lines", 0))  # recorded lines (0: none, or an older journal)
        self.sha = str(last.get("sha256", ""))
        self.done = bool(last.get("done", False))
        self.digest = hashlib.sha256()
        self.seen = 0  # lines of this attempt read so far
        self.prefix = ""  # the sha256 of this attempt's first `lines` lines, once read
        self.refused = False

    def see(self, chunk: bytes, present: int) -> None:
        """Account a chunk of the attempt; `present`: its lines found recorded so far."""
        before, self.seen = self.seen, self.seen + chunk.count(b"\n")
        if before < self.lines <= self.seen:  # the recorded part ends in this chunk
            cut = 0
            for _ in range(self.lines - before):
                cut = chunk.index(b"\n", cut) + 1
            self.digest.update(chunk[:cut])
            self.prefix = self.digest.hexdigest()
            self.digest.update(chunk[cut:])
        else:
            self.digest.update(chunk)
        # A completed batch is judged by its hash alone (its lines may since have been cut from
        # the log by hand); an interrupted one must also be found where it was written.
        missing = not self.done and present < min(self.seen, self.lines)
        if missing or (self.prefix and self.prefix != self.sha):
            self.refused = True  # a recorded line differs (found once the prefix is hashed)
        if self.done and self.seen > self.lines:
            self.refused = True

    def finish(self) -> None:
        """Raise BatchConflictError if the attempt is not the recorded batch (or its rest)."""
        if self.lines and (self.seen < self.lines or self.prefix != self.sha):
            self.refused = True
        if self.refused:
            raise BatchConflictError(
                self.batch_id, self.lines, self.sha, self.seen, self.prefix, self.done
            )

    def entry(self, done: bool) -> bytes:
        record: dict[str, Any] = {
            "ts": utc_now(),
            "batch": self.batch_id,
            "lines": self.seen,
            "sha256": self.digest.hexdigest(),
        }
        if done:
            record["done"] = True
        return dumps_line(record)


def journal_path(log: Path) -> Path:
    return log.with_name(f".{log.name}.batches.jsonl")


def batch_entries(log: Path, batch_id: str) -> list[dict[str, Any]]:
    """The journal entries of a batch's attempts at appending to `log` (`start`, `stamp`),
    oldest first."""
    return [e for e in _journal(log, batch_id) if "start" in e]


def _journal(log: Path, batch_id: str) -> list[dict[str, Any]]:
    """Every journal entry of a batch, oldest first: one per attempt (`start`, `stamp`), the
    lines and sha256 of the batch as written so far (`done` once whole), and, in a copied
    project, one with its `records` (the lines were copied, not appended as a batch)."""
    return [e for e in read_from(journal_path(log)).records if e.get("batch") == batch_id]


def recorded_batches(log: Path) -> dict[str, int]:
    """The batches recorded into `log` by id, with their records (0: a batch recorded whole
    before the journal said its count, or one a crash interrupted and no retry finished)."""
    found: dict[str, int] = {}
    for entry in read_from(journal_path(log)).records:
        batch = entry.get("batch")
        if not isinstance(batch, str):
            continue
        if "records" in entry:
            found[batch] = int(entry["records"])
        elif entry.get("done"):
            found[batch] = int(entry.get("lines", 0))
        else:
            found.setdefault(batch, 0)
    return found


def add_recorded_batches(log: Path, batches: dict[str, int], root: Path | None = None) -> None:
    """Say in `log`'s journal that these batches are in it whole (a copy carries their ids),
    so a retry of one appends nothing."""
    if batches:
        now = utc_now()
        lines = b"".join(
            dumps_line({"ts": now, "batch": b, "records": n}) for b, n in batches.items()
        )
        _append_journal(log, lines, root)


def _inode(path: Path) -> int:
    """The inode at `path` itself (a link there is not the log we opened), -1 if none."""
    try:
        return os.lstat(path).st_ino
    except (FileNotFoundError, NotADirectoryError):
        return -1


def _append_journal(log: Path, line: bytes, root: Path | None = None) -> int:
    """Append an entry to a log's journal; return the journal's size before it (-1 when this
    made the journal)."""
    journal = journal_path(log)
    new = _inode(journal) == -1
    fd = safefs.open_append(journal, root)
    try:
        _truncate_torn_tail(fd)
        size = -1 if new else os.fstat(fd).st_size
        _write_all(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size


def _cut_journal(log: Path, size: int, root: Path | None) -> None:
    """Undo an attempt's journal entry: back to `size`, or no journal when it made it."""
    journal = journal_path(log)
    if size < 0:
        journal.unlink(missing_ok=True)
        return
    fd = safefs.open_append(journal, root)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


WRITER = LogWriter()


def _after_fork() -> None:
    for writer in list(_WRITERS):
        writer._forked()
    for log in list(_LOGS):
        log._forked()


os.register_at_fork(after_in_child=_after_fork)


@contextmanager
def locked_log(path: Path, timeout: float, root: Path | None = None) -> Iterator[int]:
    """Hold the lock of the log at `path` (created if missing) for a multi-step change."""
    fd = safefs.open_append(path, root)
    try:
        with flocked(fd, path, timeout):
            yield fd
    finally:
        os.close(fd)


def write_lines(
    fd: int, path: Path, data: bytes, fsync: bool, before: int | None = None
) -> None:
    """Append whole lines to a log whose lock `fd` holds; a short write leaves nothing.
    `before`: the log's size, when the caller holding the lock has it."""
    if before is None:
        before = os.fstat(fd).st_size
    try:
        written = os.write(fd, data)  # whole, nearly always: the rest only after a short one
        if written < len(data):
            _write_all(fd, data[written:])
        if fsync:
            os.fsync(fd)
    except OSError as exc:
        # A short write (disk full) must leave no part of the data behind.
        os.ftruncate(fd, before)
        raise StateError(f"could not append to {path}: {exc.strerror}") from exc


def write_locked(fd: int, path: Path, data: bytes) -> None:
    """Append whole lines durably to a log held with locked_log, cutting a torn tail first."""
    _truncate_torn_tail(fd)
    write_lines(fd, path, data, fsync=True)


@dataclass
class Chunk:
    """Records read from a log, with the byte offset after the last whole line read."""

    records: list[dict[str, Any]] = field(default_factory=list)
    end: int = 0
    lines: int = 0
    torn_bytes: int = 0
    skipped: list[int] = field(default_factory=list)
    first_line: int = 1

    def line_of(self, index: int) -> int:
        """The line number of the index-th record (lines skipped as invalid do not count)."""
        line = self.first_line + index
        for skipped in self.skipped:
            if skipped <= line:
                line += 1
        return line


def parse_lines(
    lines: list[bytes], path: Path, first_line: int, skip_invalid: bool
) -> tuple[list[dict[str, Any]], list[int]]:
    """Parse JSON object lines; a bad one is an error naming file and line, or skipped."""
    import orjson

    loads = orjson.loads
    try:
        if not lines or max(map(len, lines)) <= LINE_MAX_BYTES:
            records = [loads(line) for line in lines]
            if all(type(r) is dict for r in records):
                return records, []
    except orjson.JSONDecodeError:
        pass
    records, skipped = [], []
    for i, line in enumerate(lines):
        long = line == OVERLONG_LINE or len(line) > LINE_MAX_BYTES
        try:
            record = None if long else loads(line)
        except orjson.JSONDecodeError:
            record = None
        if type(record) is dict:
            records.append(record)
        elif skip_invalid:
            skipped.append(first_line + i)
        else:
            what = f"is longer than {LINE_MAX_TEXT}" if long else "is not a JSON object"
            raise StateError(f"{path}: line {first_line + i} {what}; {SKIP_INVALID}")
    return records, skipped


class Block(NamedTuple):
    """Whole lines of a log as bytes, from offset `start` to `end`."""

    data: bytes
    start: int
    end: int
    torn_bytes: int = 0


LINE_MAX_TEXT = f"{LINE_MAX_BYTES >> 20} MiB ({LINE_MAX_BYTES:,} bytes)"
OVERLONG_LINE = b"\x00(a line longer than the line limit)"
"""Stands in, in what the readers hand on, for a line longer than LINE_MAX_BYTES: never
valid JSON (a NUL byte), so it is a malformed line named by its number, or skipped."""


class Lines(NamedTuple):
    """Whole lines from consecutive reads, and the stream bytes consumed through the last
    one. The last item has `last` set and holds the unterminated tail instead (b"" when none,
    OVERLONG_LINE for an over-long one), with `consumed` every byte read."""

    data: bytes
    consumed: int
    last: bool = False


def whole_lines(reads: Iterable[bytes]) -> Iterator[Lines]:
    """Blocks of whole lines out of a stream's reads, in memory bounded by a read and
    LINE_MAX_BYTES: a line longer than the limit is passed over as the stream goes (never
    held or joined again) and handed on as OVERLONG_LINE, so a 300 MB line costs one pass."""
    pos = 0  # stream bytes read
    carry = b""  # the start of a line not ended yet (at most LINE_MAX_BYTES)
    passing = 0  # bytes of an over-long line read so far (not kept)
    for data in reads:
        if not data:
            continue
        pos += len(data)
        head = b""
        if carry or passing:
            cut = data.find(b"\n") + 1
            if not cut:
                if passing or len(carry) + len(data) > LINE_MAX_BYTES:
                    passing += len(carry) + len(data)
                    carry = b""
                else:
                    carry += data  # bounded: the line is still under the limit
                continue
            if passing or len(carry) + cut - 1 > LINE_MAX_BYTES:
                head = OVERLONG_LINE + b"\n"
            else:
                head = carry + data[:cut]
            data = data[cut:]
            carry, passing = b"", 0
        whole = data.rfind(b"\n") + 1
        if head or whole:
            yield Lines(head + data[:whole] if whole else head, pos - len(data) + whole)
        rest = data[whole:]
        if len(rest) > LINE_MAX_BYTES:
            passing = len(rest)
        else:
            carry = rest
    yield Lines(OVERLONG_LINE if passing else carry, pos, last=True)


def _reads(f: Any, block: int, todo: int | None) -> Iterator[bytes]:
    """Reads of `block` bytes from a file (at most `todo` bytes in all, when given)."""
    while todo is None or todo > 0:
        data = f.read(block if todo is None else min(block, todo))
        if not data:
            return
        if todo is not None:
            todo -= len(data)
        yield data


def read_blocks(
    path: Path, offset: int = 0, block: int = 8 << 20, stop: int | None = None
) -> Iterator[Block]:
    """The whole lines of a log from byte `offset` (to `stop`), a block at a time, unparsed.

    Memory stays bounded by the block and LINE_MAX_BYTES: a longer line is handed on as
    OVERLONG_LINE (so a block's data may be shorter than its span). The last block is empty
    and reports a torn tail; no other is empty.
    """
    try:
        fd = safefs.open_file_for_read(path)
    except FileNotFoundError:
        yield Block(b"", offset, offset)
        return
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        start = offset
        # Up to the size at opening (or `stop`): a read never asks for more than is there,
        # as a buffered read allocates all it asks for.
        size = os.fstat(fd).st_size if stop is None else stop
        for got in whole_lines(_reads(f, block, size - offset)):
            end = offset + got.consumed
            if got.last:
                yield Block(b"", start, start, torn_bytes=end - start)
                return
            yield Block(got.data, start, end)
            start = end


def read_chunks(
    path: Path,
    offset: int = 0,
    first_line: int = 1,
    skip_invalid: bool = False,
    block: int = 8 << 20,
    stop: int | None = None,
) -> Iterator[Chunk]:
    """Read and parse the whole lines of a log from byte `offset` (to `stop`), a block at a
    time (see read_blocks). Each chunk's `end` is the offset after its last line; the last
    chunk reports a torn tail."""
    for got in read_blocks(path, offset, block, stop):
        if not got.data:
            yield Chunk(end=got.end, torn_bytes=got.torn_bytes)
            return
        lines = got.data.split(b"\n")[:-1]
        records, skipped = parse_lines(lines, path, first_line, skip_invalid)
        yield Chunk(records, got.end, len(lines), 0, skipped, first_line)
        first_line += len(lines)


def read_from(
    path: Path, offset: int = 0, first_line: int = 1, skip_invalid: bool = False
) -> Chunk:
    """Read the whole lines of a log from byte `offset` on (which must start a line)."""
    out = Chunk(end=offset, first_line=first_line)
    for chunk in read_chunks(path, offset, first_line, skip_invalid):
        out.records += chunk.records
        out.lines += chunk.lines
        out.skipped += chunk.skipped
        out.end, out.torn_bytes = chunk.end, chunk.torn_bytes
    return out


def tail_span(path: Path, count: int) -> tuple[int, int, int]:
    """(start, end, torn bytes) of the last `count` whole lines, found reading backwards only."""
    try:
        fd = safefs.open_file_for_read(path)
    except FileNotFoundError:
        return 0, 0, 0
    try:
        size = pos = os.fstat(fd).st_size
        end = 0
        while pos > 0:  # the end of the last whole line
            low = max(0, pos - _BLOCK)
            cut = os.pread(fd, pos - low, low).rfind(b"\n")
            if cut >= 0:
                end = low + cut + 1
                break
            pos = low
        need, pos, start = count + 1, end, 0  # the newline before the first line wanted
        step = _BLOCK
        while pos > 0:
            low = max(0, pos - step)
            step = min(2 * step, 16 * _BLOCK)  # a long span in fewer reads
            block = os.pread(fd, pos - low, low)
            found = _newlines(block)
            if found >= need:
                cut = len(block)
                for _ in range(need):
                    cut = block.rfind(b"\n", 0, cut)
                start = low + cut + 1
                break
            need -= found
            pos = low
        return start, end, size - end
    finally:
        os.close(fd)


def head_span(path: Path, count: int) -> int:
    """Where the first `count` whole lines end (all the whole lines, if fewer), found reading
    forwards only."""
    import numpy as np

    try:
        fd = safefs.open_file_for_read(path)
    except FileNotFoundError:
        return 0
    try:
        pos = end = 0
        need = count
        while need > 0:
            block = os.pread(fd, 4 << 20, pos)
            if not block:
                break
            newlines = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
            if len(newlines) >= need:
                return pos + int(newlines[need - 1]) + 1
            if len(newlines):
                end = pos + int(newlines[-1]) + 1
            need -= len(newlines)
            pos += len(block)
        return end
    finally:
        os.close(fd)


def _newlines(block: bytes) -> int:
    """The newlines in a block: numpy's compare and count for a large one (several times
    bytes.count's speed), bytes.count for a small one (no numpy for light commands)."""
    if len(block) < 1 << 18:
        return block.count(b"\n")
    import numpy as np

    return int(np.count_nonzero(np.frombuffer(block, np.uint8) == 10))


def read_span(
    path: Path, start: int, stop: int | None, skip_invalid: bool = False, block: int = 8 << 20
) -> Iterator[Chunk]:
    """Chunks of the lines between two offsets, read `block` bytes at a time; a bad line's
    number is counted from the top."""
    try:
        yield from read_chunks(path, start, 1, skip_invalid, block, stop)
    except StateError:
        first = lines_before(path, start) + 1  # only on the error path: this reads the head
        yield from read_chunks(path, start, first, skip_invalid, block, stop)
        raise


def tail(path: Path, count: int, skip_invalid: bool = False) -> Chunk:
    """Parse the last `count` whole lines of a log."""
    start, end, torn = tail_span(path, count)
    out = Chunk(end=end, torn_bytes=torn)
    for chunk in read_span(path, start, end, skip_invalid):
        out.records += chunk.records
        out.lines += chunk.lines
        out.skipped += chunk.skipped
    return out


def blocks_backwards(path: Path, end: int, block: int = _BLOCK) -> Iterator[tuple[int, bytes]]:
    """Runs of whole lines of a log before byte `end`, newest run first, each with the offset
    it starts at (a torn line ending at `end` left out). Reads backwards only: memory stays
    bounded by the block and LINE_MAX_BYTES. A line longer than that comes as OVERLONG_LINE
    (always the last line of its run, so the offsets of the lines before it hold)."""
    block = min(block, LINE_MAX_BYTES)
    try:
        fd = safefs.open_file_for_read(path)
    except FileNotFoundError:
        return
    try:
        end = min(end, os.fstat(fd).st_size)
        pos = end
        while pos > 0:  # past the newline ending the last whole line
            low = max(0, pos - block)
            cut = os.pread(fd, pos - low, low).rfind(b"\n")
            if cut >= 0:
                pos = low + cut + 1
                break
            pos = low
        # The bytes from `pos` of a line that starts before it (the piece read first first):
        # none at first, as `pos` follows a newline.
        carry: list[bytes] = []
        carried, overlong = 0, False
        while pos > 0:
            low = max(0, pos - block)
            data = os.pread(fd, pos - low, low)
            if len(data) < pos - low:
                return  # cut short meanwhile (a replaced log): what was read stands
            first = -1 if low == 0 else data.find(b"\n")  # lines start after it
            if low > 0 and first < 0:  # the whole read lies inside one line
                carried += len(data)
                overlong = overlong or carried > LINE_MAX_BYTES
                if overlong:
                    carry = []
                else:
                    carry.append(data)
                pos = low
                continue
            last = data.rfind(b"\n")
            if overlong or len(data) - last - 1 + carried > LINE_MAX_BYTES:
                joined = OVERLONG_LINE + b"\n"
            else:
                joined = b"".join([data[last + 1 :], *reversed(carry)])
            run = data[first + 1 : last + 1] + joined
            if run:
                yield low + first + 1, run
            carry, carried, overlong = [data[: first + 1]], first + 1, False
            pos = low
    finally:
        os.close(fd)


def lines_backwards(path: Path, end: int, block: int = _BLOCK) -> Iterator[tuple[int, bytes]]:
    """The whole lines of a log before byte `end`, newest first, each with the offset it
    starts at (see blocks_backwards)."""
    for start, text in blocks_backwards(path, end, block):
        lines = text.split(b"\n")[:-1]
        starts = [start]
        for line in lines[:-1]:
            starts.append(starts[-1] + len(line) + 1)
        yield from zip(reversed(starts), reversed(lines), strict=True)


def lines_before(path: Path, offset: int) -> int:
    with os.fdopen(safefs.open_file_for_read(path), "rb") as f:
        return sum(data.count(b"\n") for data in _reads(f, 1 << 20, offset))


def encode_batch(records: Iterable[dict[str, Any]]) -> bytes:
    import orjson

    return b"".join(orjson.dumps(r) + b"\n" for r in records)
