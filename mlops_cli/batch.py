"""JSONL batches (`--file`): validated whole before anything is written."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from . import jsonl
from .errors import ValidationError
from .store.base import BatchResult


class BatchError(ValidationError):
    """A batch with bad lines: lists the first ten line numbers and the count."""


class CapError(ValidationError):
    """A batch would take a capped stream (the reference set) past its size."""

    def __init__(self, held: int, adding: int, cap: int) -> None:
        super().__init__(f"the stream holds {held} of {cap} records; adding {adding} exceeds it")
        self.held, self.adding, self.cap = held, adding, cap


def validate_batch(
    data: bytes,
    validate: Callable[[Any, str], Any],
    progress: Callable[[int], None] | None = None,
    stamp: str | None = None,
) -> tuple[bytes, int]:
    """Validate every line of a JSONL batch; return the lines to append (with `ts`) and count.

    Nothing is written unless every line is valid. Lines keep their bytes; a `ts` is spliced
    in front of the fields of those without one. Blank lines are ignored.
    """
    lines = data.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()
    bad: list[tuple[int, str]] = []
    blank = 0
    loads = orjson.loads
    step = 65536
    for base in range(0, len(lines), step):
        part = lines[base : base + step]
        try:  # the common case: every line valid, checked without per-line bookkeeping
            for doc in [loads(raw) for raw in part]:
                validate(doc, "")
        except (orjson.JSONDecodeError, ValidationError):
            for number, raw in enumerate(part, base + 1):
                try:
                    validate(loads(raw), "")
                except orjson.JSONDecodeError:
                    if raw.strip():
                        bad.append((number, "not valid JSON"))
                    else:
                        blank += 1
                except ValidationError as exc:
                    bad.append((number, str(exc)))
        if progress is not None:
            progress(min(base + step, len(lines)))
    if bad:
        shown = "; ".join(f"line {n}: {msg}" for n, msg in bad[:10])
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise BatchError(f"{len(bad)} bad line(s), nothing recorded: {shown}{more}")
    count = len(lines) - blank
    if not count:
        raise ValidationError("the batch holds no records")
    prefix = b'{"ts":"' + (stamp or jsonl.utc_now()).encode() + b'",'
    if not blank and b'"ts"' not in data and data[:1] == b"{" and data.count(b"\n{") == count - 1:
        # Every line starts with "{" and none has a ts: splice the stamp in with one pass.
        # (A newline cannot occur inside a JSON line, so "\n{" only starts a line.)
        body = data if data.endswith(b"\n") else data + b"\n"
        return prefix + body[1:].replace(b"\n{", b"\n" + prefix), count
    out = []
    for raw in lines:
        line = raw.strip()
        if line:
            out.append(line if b'"ts"' in line and "ts" in loads(line) else prefix + line[1:])
    return b"\n".join(out) + b"\n", count


def append_batch(
    log: Path,
    data: bytes,
    validate: Callable[[Any, str], Any],
    timeout: float,
    batch_id: str | None = None,
    progress: Callable[[int], None] | None = None,
    root: Path | None = None,
) -> BatchResult:
    """Validate a JSONL batch whole, then append it exactly once (see LogWriter.append_batch).

    The batch id defaults to the content's hash, so running an interrupted step again
    completes the batch instead of recording it twice.
    """
    batch_id = batch_id or hashlib.sha256(data).hexdigest()[:32]
    entries = jsonl.batch_entries(log, batch_id)
    stamp = str(entries[0]["stamp"]) if entries else jsonl.utc_now()
    payload, count = validate_batch(data, validate, progress, stamp)
    appended = jsonl.WRITER.append_batch(log, batch_id, payload, stamp, timeout, root=root)
    return BatchResult(batch_id, appended, count - appended)
