"""Where each stream lives (tables, `route`) and records as rows and back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
from psycopg.types.json import Json, Jsonb

from ...timeutil import parse_ts
from ..base import (
    EVENTS,
)


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


# A stored time read as the text `stamp` writes: one Python cannot hold (after year 9999 in
# UTC, as `9999-12-31T23:59:59-14:00` is) is read as it is, not a failure of every read.
TS_TEXT = """to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


@dataclass(frozen=True)
class Table:
    """Where a kind of stream lives: its table, the columns naming the stream, the rest."""

    name: str
    keys: tuple[str, ...]
    values: tuple[str, ...]
    types: tuple[str, ...]  # of keys + values, for binary COPY

    @property
    def columns(self) -> tuple[str, ...]:
        return self.keys + self.values

    def selected(self) -> str:
        """The value columns as read back: the time as text (see TS_TEXT)."""
        return ", ".join(TS_TEXT if c == "ts" else c for c in self.values)

    def where(self) -> str:
        return " AND ".join(f"{k} = %s" for k in self.keys) or "TRUE"


REQUESTS = Table(
    "requests",
    ("test",),
    (
        "variant", "user_id", "user_id_is_int", "inference_time_ms", "confidence", "error", "ts",
        "step",
    ),
    ("text", "text", "text", "bool", "float8", "float8", "bool", "timestamptz", "int2"),
)
METRICS = Table(
    "metrics",
    ("model_type", "version"),
    ("inference_time_ms", "confidence", "error", "ts"),
    ("text", "text", "float8", "float8", "bool", "timestamptz"),
)
SAMPLES = Table(
    "drift_samples",
    ("model_type", "version", "kind"),
    ("prediction", "confidence", "features", "ts"),
    ("text", "text", "text", "float8", "float8", "jsonb", "timestamptz"),
)
CHECKS = Table(
    "checks",
    ("model_type", "version"),
    ("doc", "score", "level", "ts"),
    ("text", "text", "json", "float8", "text", "timestamptz"),
)
EVENT_TABLE = Table(
    "events", (), ("doc", "kind", "model_type", "ts"), ("json", "text", "text", "timestamptz")
)
BUFFERED = (REQUESTS, METRICS, SAMPLES)


def route(stream: str) -> tuple[Table, tuple[str, ...]]:
    """The table of a stream and the key values that select its rows."""
    parts = tuple(stream.split("/"))
    if parts[0] == "ab" and len(parts) == 2:
        return REQUESTS, parts[1:]
    if parts[0] == "metrics" and len(parts) == 3:
        return METRICS, parts[1:]
    if parts[0] == "drift" and len(parts) == 4:
        if parts[3] == "checks":
            return CHECKS, parts[1:3]
        if parts[3] in ("reference", "production"):
            return SAMPLES, parts[1:]
    if stream == EVENTS:
        return EVENT_TABLE, ()
    raise ValueError(f"unknown stream {stream!r}")


SCAN_PAGE = 65536
NO_TS = datetime.min.replace(tzinfo=timezone.utc)  # the default of records that have a ts


def _ts(record: dict[str, Any], default: datetime) -> datetime:
    value = record.get("ts")
    return default if value is None else parse_ts(value)


def to_row(table: Table, record: dict[str, Any], default_ts: datetime) -> tuple[Any, ...]:
    """The value columns of a validated record."""
    ts = _ts(record, default_ts)
    if table is REQUESTS:
        user = record.get("user_id")
        return (
            record["variant"],
            None if user is None else str(user),
            type(user) is int,
            float(record["inference_time_ms"]),
            float(record["confidence"]),
            bool(record.get("error", False)),
            ts,
            record.get("step"),
        )
    if table is METRICS:
        return (
            float(record["inference_time_ms"]),
            float(record["confidence"]),
            bool(record.get("error", False)),
            ts,
        )
    if table is SAMPLES:
        features = record.get("features")
        return (
            float(record["prediction"]),
            float(record["confidence"]),
            None if features is None else Jsonb(features, dumps),
            ts,
        )
    if table is CHECKS:
        score = record.get("score")
        return (Json(record, dumps), score, record.get("level"), ts)
    return (Json(record, dumps), str(record.get("event", "")), record.get("model_type"), ts)


def from_row(table: Table, row: Sequence[Any]) -> dict[str, Any]:
    """A row read by `Table.selected()` as the record that was appended (documents as
    written; the time as text, see TS_TEXT)."""
    if table in (CHECKS, EVENT_TABLE):
        return row[0]  # type: ignore[no-any-return]
    if table is REQUESTS:
        variant, user, is_int, t, c, error, ts, step = row
        out: dict[str, Any] = {"ts": ts, "variant": variant}
        if user is not None:
            out["user_id"] = int(user) if is_int else user
        out.update(inference_time_ms=t, confidence=c, error=error)
        if step is not None:
            out["step"] = step
        return out
    if table is METRICS:
        t, c, error, ts = row
        return {"ts": ts, "inference_time_ms": t, "confidence": c, "error": error}
    prediction, confidence, features, ts = row
    out = {"ts": ts, "prediction": prediction, "confidence": confidence}
    if features is not None:
        out["features"] = features
    return out
