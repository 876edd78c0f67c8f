"""COPY writing: buffered rows, and batches validated in bounded chunks while one COPY
stores them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, BinaryIO, Protocol

import orjson
import psycopg
from psycopg.copy import QueuedLibpqWriter

from ...batch import SHOWN, BatchError, CapError, line_chunks, overlong
from ...errors import BatchConflictError, ValidationError
from ...jsonl import LINE_MAX_TEXT
from ...limits import LINE_MAX_BYTES
from ...timeutil import parse_ts
from ..base import BatchResult, Progress, Validator
from .rows import BUFFERED, METRICS, REQUESTS, Table, to_row

_CHUNK_BYTES = 1 << 20  # batches are parsed and validated this many bytes at a time

COUNT_SQL = (
    "INSERT INTO stream_counts (stream, records, appended) VALUES (%s, %s, %s) "
    "ON CONFLICT (stream) DO UPDATE SET records = stream_counts.records + excluded.records, "
    "appended = stream_counts.appended + excluded.appended"
)


def copy_rows(
    cur: psycopg.Cursor[Any], table: Table, rows: Iterator[tuple[Any, ...]] | list[Any]
) -> None:
    sql = f"COPY {table.name} ({', '.join(table.columns)}) FROM STDIN (FORMAT BINARY)"
    with cur.copy(sql) as copy_:
        copy_.set_types(list(table.types))
        for row in rows:
            copy_.write_row(row)


class _AlreadyRecorded(Exception):
    """Leaves a batch transaction (rolled back) whose id had committed before."""

    def __init__(self, records: int) -> None:
        super().__init__(records)
        self.records = records


class _Chunks(Protocol):
    def chunks(self) -> Iterator[bytes]: ...


class _Hashed:
    """A batch's reader that hashes the bytes read through it (sha256, the batch as given)
    and hands them on in chunks of whole lines (batch.line_chunks: a line over the line
    limit is passed over as it is read, never held), counting lines."""

    def __init__(self, reader: BinaryIO) -> None:
        import hashlib

        self.reader = reader
        self.digest = hashlib.sha256()
        self.lines = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self.reader.read(size)
        self.digest.update(data)
        return data

    def chunks(self) -> Iterator[bytes]:
        for data in line_chunks(self, _CHUNK_BYTES):  # type: ignore[arg-type]
            self.lines += data.count(b"\n")
            yield data

    def drain(self) -> _Hashed:
        for _data in self.chunks():
            pass
        return self


_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _escape(value: str) -> str:
    return value.translate(_ESCAPES)


def text_lines(table: Table, prefix: str, records: list[dict[str, Any]], now: str) -> str:
    """Validated records as COPY text lines of a sample table; numbers by repr and ts strings
    as they are (PostgreSQL parses them), which keeps this loop cheap enough to overlap the
    server's work."""
    out: list[str] = []
    add = out.append
    iso = _ISO.fullmatch
    for r in records:
        ts = r.get("ts")
        if ts is None:
            ts = now
        elif not iso(ts):
            ts = parse_ts(ts).isoformat()
        if table is REQUESTS:
            user = r.get("user_id")
            if type(user) is int:
                uid = f"{user}\tt"
            elif user is None:
                uid = "\\N\tf"
            else:
                uid = f"{_escape(str(user))}\tf"
            step = r.get("step")
            step_text = "\\N" if step is None else str(step)
            add(
                f"{prefix}{r['variant']}\t{uid}\t{r['inference_time_ms']!r}\t"
                f"{r['confidence']!r}\t{'t' if r.get('error') else 'f'}\t{ts}\t"
                f"{step_text}\n"
            )
        elif table is METRICS:
            add(
                f"{prefix}{r['inference_time_ms']!r}\t{r['confidence']!r}\t"
                f"{'t' if r.get('error') else 'f'}\t{ts}\n"
            )
        else:
            features = r.get("features")
            doc = "\\N" if features is None else _escape(orjson.dumps(features).decode())
            add(f"{prefix}{r['prediction']!r}\t{r['confidence']!r}\t{doc}\t{ts}\n")
    return "".join(out)


class _BoundedWriter(QueuedLibpqWriter):
    """A queued COPY writer whose queue holds a few MB: psycopg's holds 1,024 buffers (up to
    128 MB), which fills when the batch is read faster than the server stores it, so a
    batch's memory grew with its size."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        super().__init__(cursor)
        self._queue = type(self._queue)(maxsize=32)  # of <= 128 KB each


def _copy_validated(
    cur: psycopg.Cursor[Any],
    table: Table,
    keys: tuple[str, ...],
    reader: _Chunks,
    validate: Validator,
    now: datetime,
    progress: Progress | None,
) -> int:
    """Validate a JSONL batch in bounded chunks while one COPY writes it; any bad line raises
    BatchError (listing the first ten) after the whole batch was read, so the caller's
    transaction rolls back and nothing is recorded. Only the first bad lines are kept."""
    loads = orjson.loads
    bad: list[tuple[int, str]] = []
    errors = 0
    count = 0
    number = 0
    text = table in BUFFERED  # sample tables: COPY text lines built here (see text_line)
    options = "" if text else " (FORMAT BINARY)"
    sql = f"COPY {table.name} ({', '.join(table.columns)}) FROM STDIN{options}"
    prefix = "".join(f"{_escape(k)}\t" for k in keys)
    stamp_text = now.isoformat()
    # A queued writer sends from its own thread, so the server stores one chunk while this
    # thread validates the next.
    writer = _BoundedWriter(cur) if text else None
    with cur.copy(sql, writer=writer) as copy_:
        if not text:
            copy_.set_types(list(table.types))
        for data in reader.chunks():
            lines = data.split(b"\n")
            lines.pop()  # a chunk ends with a newline
            base = number
            number += len(lines)
            kept = len(bad)
            records = _validated_chunk(lines, base, validate, loads, bad)
            errors += len(bad) - kept
            del bad[SHOWN:]
            if not errors:
                if text:
                    copy_.write(text_lines(table, prefix, records, stamp_text).encode())
                else:
                    for record in records:
                        copy_.write_row(keys + to_row(table, record, now))
            count += len(records)
            if progress is not None:
                progress(number)
        if errors:
            shown = "; ".join(f"line {n}: {msg}" for n, msg in bad)
            more = f" (and {errors - SHOWN} more)" if errors > SHOWN else ""
            raise BatchError(f"{errors} bad line(s), nothing recorded: {shown}{more}")
        if not count:
            raise ValidationError("the batch holds no records")
    return count


def _validated_chunk(
    lines: list[bytes],
    base: int,
    validate: Validator,
    loads: Callable[[bytes], Any],
    bad: list[tuple[int, str]],
) -> list[dict[str, Any]]:
    """The records of a chunk of lines, blank lines dropped; bad lines go to `bad` (a line
    over the line limit too, valid JSON or not, as the directory store names it)."""
    try:  # the common case: every line valid, checked without per-line bookkeeping
        if lines and max(map(len, lines)) > LINE_MAX_BYTES:
            raise ValidationError("a line is too long")  # named line by line below
        return [validate(loads(raw), "") for raw in lines]
    except (orjson.JSONDecodeError, ValidationError):
        pass
    records = []
    for number, raw in enumerate(lines, base + 1):
        try:
            if overlong(raw):
                raise ValidationError(f"longer than {LINE_MAX_TEXT}")
            records.append(validate(loads(raw), ""))
        except orjson.JSONDecodeError:
            if raw.strip():
                bad.append((number, "not valid JSON"))
        except ValidationError as exc:
            bad.append((number, str(exc)))
    return records


def lock_count(cur: psycopg.Cursor[Any], stream: str) -> int:
    """Lock the stream's count row (created if missing) for this transaction; its records."""
    cur.execute(
        "INSERT INTO stream_counts (stream, records, appended) VALUES (%s, 0, 0) "
        "ON CONFLICT DO NOTHING",
        [stream],
    )
    cur.execute("SELECT records FROM stream_counts WHERE stream = %s FOR UPDATE", [stream])
    row = cur.fetchone()
    return int(row[0]) if row else 0


def write_batch(
    conn: psycopg.Connection[Any],
    stream: str,
    table: Table,
    keys: tuple[str, ...],
    reader: BinaryIO,
    validate: Validator,
    batch_id: str | None,
    progress: Progress | None,
    cap: int | None,
) -> BatchResult:
    """One transaction: the batch id first (`ON CONFLICT DO NOTHING`; a concurrent retry
    waits on it, then finds it), then one COPY of the validated records, committed together
    with the sha256 of the batch's bytes. An id that committed before with other content is
    refused (BatchConflictError), with the same content it is "already recorded"."""
    hashed = _Hashed(reader)
    try:
        with conn.transaction(), conn.cursor() as cur:
            if batch_id:
                cur.execute(
                    "INSERT INTO batches (stream, batch_id, records) VALUES (%s, %s, 0) "
                    "ON CONFLICT DO NOTHING RETURNING now()",
                    [stream, batch_id],
                )
                inserted = cur.fetchone()
                if inserted is None:
                    cur.execute(
                        "SELECT records, sha256 FROM batches WHERE stream = %s AND batch_id = %s",
                        [stream, batch_id],
                    )
                    found = cur.fetchone()
                    records, sha = (int(found[0]), found[1]) if found else (0, None)
                    if sha is not None and hashed.drain().digest.hexdigest() != sha:
                        raise BatchConflictError(
                            batch_id, records, sha, hashed.lines, "", done=True
                        )
                    raise _AlreadyRecorded(records)
                now = inserted[0]
            else:
                row = cur.execute("SELECT now()").fetchone()
                assert row is not None
                now = row[0]
            held = lock_count(cur, stream) if cap is not None else 0
            count = _copy_validated(cur, table, keys, hashed, validate, now, progress)
            if cap is not None and held + count > cap:
                raise CapError(held, count, cap)
            if batch_id:
                cur.execute(
                    "UPDATE batches SET records = %s, sha256 = %s "
                    "WHERE stream = %s AND batch_id = %s",
                    [count, hashed.digest.hexdigest(), stream, batch_id],
                )
            cur.execute(COUNT_SQL, [stream, count, count])
    except _AlreadyRecorded as done:
        return BatchResult(batch_id or "", 0, done.records)
    return BatchResult(batch_id or "", count, 0)


def replace_rows(
    conn: psycopg.Connection[Any],
    stream: str,
    table: Table,
    keys: tuple[str, ...],
    reader: BinaryIO,
    validate: Validator,
    cap: int | None,
) -> int:
    """One transaction: the stream's rows deleted and the validated batch written instead."""
    with conn.transaction(), conn.cursor() as cur:
        lock_count(cur, stream)
        cur.execute(f"DELETE FROM {table.name} WHERE {table.where()}", list(keys))
        now = cur.execute("SELECT now()").fetchone()
        assert now is not None
        count = _copy_validated(cur, table, keys, _Hashed(reader), validate, now[0], None)
        if cap is not None and count > cap:
            raise CapError(0, count, cap)  # rolls the DELETE back
        cur.execute(
            "UPDATE stream_counts SET records = %s, appended = appended + %s WHERE stream = %s",
            [count, count, stream],
        )
    return count
