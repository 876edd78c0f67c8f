"""JSONL batches (`--file`): validated whole before anything is written."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from . import jsonl
from .errors import ValidationError


def check_ts(value: Any, where: str) -> None:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if not isinstance(value, str) or parsed is None or parsed.tzinfo is None:
        raise ValidationError(f"{where}ts must be an ISO-8601 time with a zone, not {value!r}")


class BatchError(ValidationError):
    """A batch with bad lines: lists the first ten line numbers and the count."""


def validate_batch(
    data: bytes, validate: Callable[[Any, str], Any], progress: Callable[[int], None] | None = None
) -> tuple[bytes, int]:
    """Validate every line of a JSONL batch; return the lines to append (with `ts`) and count.

    Nothing is written unless every line is valid. Lines keep their bytes; a `ts` is spliced
    into those without one.
    """
    now = b'{"ts":"' + jsonl.utc_now().encode() + b'",'
    out: list[bytes] = []
    bad: list[tuple[int, str]] = []
    loads = orjson.loads
    for number, raw in enumerate(data.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        try:
            doc = loads(line)
            validate(doc, "")
        except orjson.JSONDecodeError:
            bad.append((number, "not valid JSON"))
            continue
        except ValidationError as exc:
            bad.append((number, str(exc)))
            continue
        out.append(line if "ts" in doc else now + line[1:])  # a valid record is never {}
        if progress is not None and number % 65536 == 0:
            progress(number)
    if bad:
        shown = "; ".join(f"line {n}: {msg}" for n, msg in bad[:10])
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise BatchError(f"{len(bad)} bad line(s), nothing recorded: {shown}{more}")
    if not out:
        raise ValidationError("the batch holds no records")
    return b"\n".join(out) + b"\n", len(out)
