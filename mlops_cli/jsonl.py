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
from .errors import SKIP_INVALID, LockTimeoutError, StateError

_BLOCK = 1 << 16


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
    return dumps(record) + b"\n"


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


_WRITERS: weakref.WeakSet[LogWriter] = weakref.WeakSet()


class LogWriter:
    """Appends to logs, keeping each log's descriptor open so a per-request append is cheap."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}
        self._ends: dict[Path, int] = {}  # where this writer's last append to a log ended
        # flock excludes other open files, not threads sharing this descriptor: they queue here.
        self._mutex = threading.RLock()
        _WRITERS.add(self)

    def _forked(self) -> None:
        """In a forked child: never share a lock-holding file description with the parent."""
        self._fds = {}
        self._ends = {}
        self._mutex = threading.RLock()

    def _fd(self, path: Path, root: Path | None = None) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = safefs.open_append(path, root)  # never through a link, dirs checked
            self._fds[path] = fd
        return fd

    def forget(self, path: Path) -> None:
        self._ends.pop(path, None)
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def append(
        self,
        path: Path,
        data: bytes,
        timeout: float,
        fsync: bool = False,
        precheck: Callable[[int], None] | None = None,
        root: Path | None = None,
    ) -> None:
        """Append whole lines (`data` ends with a newline) to the log at `path`.

        `precheck(fd)` runs under the lock, after a torn tail is cut, and may refuse by raising.
        `root` is the project directory: the log is opened with every directory from it down
        checked (see safefs.open_append).
        """
        # Per request, so four system calls: flock, fstat, write, unlock. A log replaced or
        # removed since it was opened has no links left (st_nlink 0): reopened. Its last byte
        # is read only when the log is not where this writer's last append left it (another
        # writer's tail may be torn; the end of our own append is a newline).
        for _attempt in range(3):
            fd = self._fd(path, root)
            with self._mutex:
                lock(fd, path, timeout)  # (not `flocked`: a context manager costs 4 calls)
                try:
                    st = os.fstat(fd)
                    if st.st_nlink:
                        size = st.st_size
                        if size != self._ends.get(path):
                            size -= _truncate_torn_tail(fd, size)
                        if precheck is not None:
                            precheck(fd)
                        self._ends.pop(path, None)  # unknown until the write succeeds
                        write_lines(fd, path, data, fsync, size)
                        self._ends[path] = size + len(data)
                        return
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            self.forget(path)  # the log was replaced since we opened it: reopen
        raise StateError(f"could not append to {path}: it keeps being replaced")

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
        for _attempt in range(3):
            new = _inode(path) == -1
            fd = self._fd(path, root)
            with self._mutex, flocked(fd, path, timeout):
                if _inode(path) == os.fstat(fd).st_ino:
                    _truncate_torn_tail(fd)
                    try:
                        return _append_chunks(fd, path, batch_id, chunks, root, room)
                    except BaseException:
                        if new and os.fstat(fd).st_size == 0:
                            # Nothing recorded: no empty log left either (this descriptor,
                            # kept, is found stale and reopened by the next append).
                            os.unlink(path)
                        raise
            self.forget(path)  # the log was replaced since we opened it: reopen
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
    entries = batch_entries(path, batch_id) if batch_id else []
    stamp = str(entries[0]["stamp"]) if entries else utc_now()
    present = _Present(fd, entries)
    start = os.fstat(fd).st_size
    held, cap = room(fd) if room is not None else (0, 0)
    appended = 0
    over = False
    journal_size = None  # the journal's size before this attempt's entry (-1: no journal)
    try:
        for chunk in chunks(stamp):
            data = chunk
            todo = chunk.count(b"\n")
            if not present.done:
                lines = chunk.split(b"\n")[:-1]
                found = present.match(lines)
                todo = len(lines) - found
                data = b"\n".join(lines[found:]) + b"\n" if todo else b""
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
        if over:
            raise Overflow(held, cap, appended)
        if appended:
            os.fsync(fd)
    except BaseException as exc:
        os.ftruncate(fd, start)  # all or nothing: cut back what this attempt wrote
        if journal_size is not None:  # and its journal entry
            _cut_journal(path, journal_size, root)
        if isinstance(exc, OSError):
            raise StateError(f"could not append to {path}: {exc.strerror or exc}") from exc
        raise
    return appended, present.count


def journal_path(log: Path) -> Path:
    return log.with_name(f".{log.name}.batches.jsonl")


def batch_entries(log: Path, batch_id: str) -> list[dict[str, Any]]:
    """The journal entries of a batch appended to `log`, one per attempt, oldest first."""
    return [r for r in read_from(journal_path(log)).records if r.get("batch") == batch_id]


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
        records = [loads(line) for line in lines]
        if all(type(r) is dict for r in records):
            return records, []
    except orjson.JSONDecodeError:
        pass
    records, skipped = [], []
    for i, line in enumerate(lines):
        try:
            record = loads(line)
        except orjson.JSONDecodeError:
            record = None
        if type(record) is dict:
            records.append(record)
        elif skip_invalid:
            skipped.append(first_line + i)
        else:
            raise StateError(
                f"{path}: line {first_line + i} is not a JSON object; {SKIP_INVALID}"
            )
    return records, skipped


class Block(NamedTuple):
    """Whole lines of a log as bytes, from offset `start` to `end`."""

    data: bytes
    start: int
    end: int
    torn_bytes: int = 0


def read_blocks(
    path: Path, offset: int = 0, block: int = 8 << 20, stop: int | None = None
) -> Iterator[Block]:
    """The whole lines of a log from byte `offset` (to `stop`), a block at a time, unparsed.

    Memory stays bounded by the block (and the longest line). The last block is empty and
    reports a torn tail; no other is empty.
    """
    try:
        fd = safefs.open_file_for_read(path)
    except FileNotFoundError:
        yield Block(b"", offset, offset)
        return
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        carry = b""
        while True:
            want = block if stop is None else min(block, stop - offset - len(carry))
            data = f.read(want) if want > 0 else b""
            if not data:
                yield Block(b"", offset, offset, torn_bytes=len(carry))
                return
            data = carry + data
            whole = data.rfind(b"\n") + 1
            carry = data[whole:]
            if whole:  # else a line longer than the block: read on
                yield Block(data[:whole], offset, offset + whole)
                offset += whole


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
    try:
        fd = safefs.open_file_for_read(path)
    except FileNotFoundError:
        return Chunk(end=offset)
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        data = f.read()
    whole = data.rfind(b"\n") + 1
    lines = data[:whole].split(b"\n")[:-1] if whole else []
    records, skipped = parse_lines(lines, path, first_line, skip_invalid)
    return Chunk(records, offset + whole, len(lines), len(data) - whole, skipped)


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
            found = block.count(b"\n")
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


def read_span(
    path: Path, start: int, stop: int | None, skip_invalid: bool = False
) -> Iterator[Chunk]:
    """Chunks of the lines between two offsets; a bad line's number is counted from the top."""
    try:
        yield from read_chunks(path, start, 1, skip_invalid, stop=stop)
    except StateError:
        first = lines_before(path, start) + 1  # only on the error path: this reads the head
        yield from read_chunks(path, start, first, skip_invalid, stop=stop)
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


def lines_before(path: Path, offset: int) -> int:
    with os.fdopen(safefs.open_file_for_read(path), "rb") as f:
        return f.read(offset).count(b"\n")


def encode_batch(records: Iterable[dict[str, Any]]) -> bytes:
    import orjson

    return b"".join(orjson.dumps(r) + b"\n" for r in records)
