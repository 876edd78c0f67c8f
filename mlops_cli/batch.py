"""JSONL batches (`--file`): streamed a chunk at a time, all or nothing, once per batch id.

A batch is read in chunks of whole lines (CHUNK_BYTES), each validated and handed on (with a
`ts` spliced into lines without one) before the next is read, so memory does not grow with
the batch. A bad line anywhere makes the whole batch fail: the stores undo what earlier chunks
wrote (the file store cuts the log back under its lock, PostgreSQL rolls back), after the rest
was scanned so the error can give the count of bad lines (and the first ten line numbers).
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Callable, Iterator
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from . import jsonl
from .errors import ValidationError
from .limits import LINE_MAX_BYTES
from .store.base import BatchResult

if TYPE_CHECKING:
    from typing import Protocol

    class _Digest(Protocol):
        def update(self, data: bytes, /) -> None: ...
        def digest(self) -> bytes: ...
        def hexdigest(self) -> str: ...

CHUNK_BYTES = 2 << 20  # a chunk of whole lines validated and appended at a time
SHOWN = 10  # bad lines named in the error

Source = bytes | BinaryIO  # a batch: its bytes, or a binary stream (a file, stdin)


class BatchError(ValidationError):
    """A batch with bad lines: lists the first ten line numbers and the count."""


class CapError(ValidationError):
    """A batch would take a capped stream (the reference set) past its size."""

    def __init__(self, held: int, adding: int, cap: int) -> None:
        super().__init__(f"the stream holds {held} of {cap} records; adding {adding} exceeds it")
        self.held, self.adding, self.cap = held, adding, cap


def _sha256(data: bytes = b"") -> _Digest:
    import hashlib  # here: importing it costs 3 ms of every A/B command's start-up

    return hashlib.sha256(data)


def content_id(data: bytes) -> str:
    """The batch id of a batch's content (its hash)."""
    return _sha256(data).hexdigest()[:32]


def file_id(path: str | Path) -> str:
    """The content id of a file, hashed a block at a time (the same as content_id of its
    bytes), so a retried `--file PATH` is known before anything is appended."""
    digest = _sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


def as_stream(data: Source, batch_id: str | None) -> tuple[BinaryIO, str | None]:
    """A batch as a stream, with its id: bytes given whole default to their content id; a
    stream has no default (data from stdin is never taken for a retry)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        return io.BytesIO(raw), batch_id or content_id(raw)
    return data, batch_id


def line_chunks(stream: BinaryIO, size: int | None = None) -> Iterator[bytes]:
    """The stream in chunks of whole lines of about `size` (CHUNK_BYTES) bytes, each ending
    with a newline (a last line without one gets it). A line longer than LINE_MAX_BYTES is
    passed over as it is read and handed on as jsonl.OVERLONG_LINE, a bad line."""
    size = size or CHUNK_BYTES
    for got in jsonl.whole_lines(iter(lambda: stream.read(size), b"")):
        if not got.last:
            yield got.data
        elif got.data:
            yield got.data + b"\n"


def stamped(prefix: bytes, data: bytes, lines: list[bytes] | None = None) -> bytes:
    """A chunk of whole, valid lines with `prefix` (`{"ts":"...",`) spliced into each line
    that has no `ts` of its own; blank lines dropped. `lines`: the chunk split, if at hand.

    A line too long to take the stamp within LINE_MAX_BYTES (one near the limit, padded with
    spaces) is written compactly, so every stored line can be read back: a valid record is
    small once its padding is gone."""
    room = LINE_MAX_BYTES - (len(prefix) - 1)  # the longest line that fits once stamped
    if _may_hold_a_line_over(data, room):
        if lines is None:
            lines = data.split(b"\n")
        if max(map(len, lines)) > room:
            return _stamped_lines(prefix, lines, room)
    if b'"ts"' not in data and data[:1] == b"{" and (
        data.count(b"\n{") == data.count(b"\n") - 1
    ):
        # Every line starts with "{" and none has a ts: splice the stamp in with one pass.
        # (A newline cannot occur inside a JSON line, so "\n{" only starts a line; the
        # chunk's last newline is followed by nothing.)
        return prefix + data[1:].replace(b"\n{", b"\n" + prefix)
    return _stamped_lines(prefix, data.split(b"\n") if lines is None else lines, room)


def _may_hold_a_line_over(data: bytes, room: int) -> bool:
    """Whether `data` may hold a line longer than `room` bytes, in a few searches: such a line
    covers a whole aligned block of (room + 1) // 2 bytes, so it is enough that every block
    holds a newline for there to be none."""
    step = (room + 1) // 2
    return any(data.find(b"\n", at, at + step) < 0 for at in range(0, len(data), step))


def _stamped_lines(prefix: bytes, lines: list[bytes], room: int) -> bytes:
    out = []
    loads = orjson.loads
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if b'"ts"' in line and "ts" in loads(line):
            out.append(line)
        elif len(line) > room:
            out.append(prefix + orjson.dumps(loads(line))[1:])
        else:
            out.append(prefix + line[1:])
    return b"\n".join(out) + b"\n" if out else b""


def overlong(raw: bytes) -> bool:
    """Whether a line (without its newline) is over LINE_MAX_BYTES, or stands for one that
    was passed over (jsonl.OVERLONG_LINE): a bad line, whatever it holds."""
    return raw == jsonl.OVERLONG_LINE or len(raw) > LINE_MAX_BYTES


def _bounded(lines: list[bytes]) -> None:
    """Send a chunk holding a line over LINE_MAX_BYTES to the line-by-line check, which
    names it (a chunk can hold a line somewhat longer than the limit whole)."""
    if lines and max(map(len, lines)) > LINE_MAX_BYTES:
        raise ValidationError("a line is too long")


class Scan:
    """Validates a batch chunk by chunk, keeping only the count and the first bad lines."""

    def __init__(
        self,
        validate: Callable[[Any, str], Any],
        stamp: str,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.validate = validate
        self.prefix = b'{"ts":"' + stamp.encode() + b'",'
        self.progress = progress
        self.lines = 0  # lines read (blank ones too: line numbers)
        self.count = 0  # records
        self.bad = 0
        self.shown: list[tuple[int, str]] = []

    def chunk(self, data: bytes) -> tuple[bytes, int]:
        """Validate a chunk of whole lines; return its records (stamped) and their count.
        Once a bad line was seen, nothing more is returned (the batch will fail)."""
        lines = data.split(b"\n")
        lines.pop()  # the chunk ends with a newline
        base = self.lines
        self.lines += len(lines)
        validate, loads = self.validate, orjson.loads
        blank = 0
        bad_before = self.bad
        try:  # the common case: every line valid, checked without per-line bookkeeping
            _bounded(lines)
            deque(map(validate, map(loads, lines), repeat("")), maxlen=0)  # a loop in C
        except (orjson.JSONDecodeError, ValidationError):
            blank = self._slow(lines, base)
        count = len(lines) - blank - (self.bad - bad_before)
        if self.progress is not None:
            self.progress(self.lines)
        self.count += count
        if self.bad:
            return b"", 0
        return stamped(self.prefix, data, lines), count

    def check(self, data: bytes) -> None:
        """Validate a chunk of whole lines, counting records and bad lines (no stamping)."""
        lines = data.split(b"\n")
        lines.pop()
        base = self.lines
        self.lines += len(lines)
        bad_before = self.bad
        blank = 0
        try:
            _bounded(lines)
            deque(map(self.validate, map(orjson.loads, lines), repeat("")), maxlen=0)
        except (orjson.JSONDecodeError, ValidationError):
            blank = self._slow(lines, base)
        self.count += len(lines) - blank - (self.bad - bad_before)
        if self.progress is not None:
            self.progress(self.lines)

    def _slow(self, lines: list[bytes], base: int) -> int:
        validate, loads = self.validate, orjson.loads
        blank = 0
        for number, raw in enumerate(lines, base + 1):
            try:
                if overlong(raw):
                    raise ValidationError(f"longer than {jsonl.LINE_MAX_TEXT}")
                validate(loads(raw), "")
                continue
            except orjson.JSONDecodeError:
                if not raw.strip():
                    blank += 1
                    continue
                else:
                    message = "not valid JSON"
            except ValidationError as exc:
                message = str(exc)
            self.bad += 1
            if len(self.shown) < SHOWN:
                self.shown.append((number, message))
        return blank

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        """The stamped records of every chunk of the stream; after the last, raise BatchError
        if any line was bad (the caller undoes what it wrote) or if there was no record."""
        for data in line_chunks(stream):
            payload, _count = self.chunk(data)
            if payload:
                yield payload
        self.finish()

    def finish(self) -> None:
        if self.bad:
            shown = "; ".join(f"line {n}: {msg}" for n, msg in self.shown)
            more = f" (and {self.bad - SHOWN} more)" if self.bad > SHOWN else ""
            raise BatchError(f"{self.bad} bad line(s), nothing recorded: {shown}{more}")
        if not self.count:
            raise ValidationError("the batch holds no records")


def append_batch(
    log: Path,
    data: Source,
    validate: Callable[[Any, str], Any],
    timeout: float,
    batch_id: str | None = None,
    progress: Callable[[int], None] | None = None,
    root: Path | None = None,
    room: Callable[[int], tuple[int, int]] | None = None,
) -> BatchResult:
    """Stream a JSONL batch into a log all or nothing, exactly once per batch id (see
    LogWriter.append_stream). Bytes default to their content id; a stream without an id is
    appended whatever came before. With `room(fd)` (the records the log holds, and its cap), a
    batch that would take it past the cap is refused whole with CapError."""
    stream, batch_id = as_stream(data, batch_id)
    if _rereadable(stream):
        chunks = _validated_first(stream, validate, progress)
    else:
        chunks = _validated_while_appended(log, stream, batch_id, validate, progress)
    try:
        appended, present = jsonl.WRITER.append_stream(
            log, batch_id, chunks, timeout, root=root, room=room
        )
    except jsonl.Overflow as over:
        raise CapError(over.held, over.adding, over.cap) from None
    return BatchResult(batch_id or "", appended, present)


def _rereadable(stream: BinaryIO) -> bool:
    try:
        return stream.seekable() and stream.tell() >= 0
    except (OSError, ValueError):
        return False


def _validated_first(
    stream: BinaryIO,
    validate: Callable[[Any, str], Any],
    progress: Callable[[int], None] | None,
) -> Callable[[str], Iterator[bytes]]:
    """A batch that can be read twice (a file, bytes) is validated whole before the log is
    opened, and read again under the log's lock only to be stamped and written: the lock is
    held for the writing, not the validating. Its hash must match the first reading's."""
    start = stream.tell()
    scan = Scan(validate, "", progress)
    first = _sha256()
    for data in line_chunks(stream):
        first.update(data)
        scan.check(data)
    scan.finish()  # bad lines, or none at all: raised before anything was opened

    def chunks(stamp: str) -> Iterator[bytes]:
        prefix = b'{"ts":"' + stamp.encode() + b'",'
        stream.seek(start)
        again = _sha256()
        for data in line_chunks(stream):
            again.update(data)
            yield stamped(prefix, data)
        if again.digest() != first.digest():
            raise ValidationError("the batch changed while it was recorded; nothing recorded")

    return chunks


def _validated_while_appended(
    log: Path,
    stream: BinaryIO,
    batch_id: str | None,
    validate: Callable[[Any, str], Any],
    progress: Callable[[int], None] | None,
) -> Callable[[str], Iterator[bytes]]:
    """A batch read once (stdin) is validated a chunk at a time as it is appended; a bad line
    anywhere makes the writer cut the log back. The first chunk is validated before the log
    is opened, so a bad small batch (or a bad first chunk) creates nothing; its stamp is the
    one a retry must reuse, read again under the lock (and swapped into the first chunk in
    the rare case it changed)."""
    entries = jsonl.batch_entries(log, batch_id) if batch_id else []
    scan = Scan(validate, str(entries[0]["stamp"]) if entries else jsonl.utc_now(), progress)
    body = scan.chunks(stream)
    first = [next(body, b"")]  # a list, so it is let go once handed on

    def chunks(stamp: str) -> Iterator[bytes]:
        prefix = b'{"ts":"' + stamp.encode() + b'",'
        head = first.pop()
        if prefix != scan.prefix:
            old, scan.prefix = scan.prefix, prefix
            head = head.replace(old, prefix)
        if head:
            yield head
        del head
        yield from body

    return chunks
