"""Time: the clock a project runs on, and the one ISO-8601 format every record carries."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The current UTC time (the default clock of a project)."""
    return datetime.now(timezone.utc)


def format_ts(moment: datetime) -> str:
    """A UTC ISO-8601 string with a `Z` (as every log line's `ts` is written)."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def stamp(moment: datetime) -> str:
    """A UTC ISO-8601 string with microseconds and a `Z`: the default `ts` of a log line."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace(
        "+00:00", "Z"
    )


def utc_now() -> str:
    """The system clock's time as a log line's `ts`."""
    return stamp(datetime.now(timezone.utc))


_second: tuple[int, str] = (-1, "")  # the last whole second stamped, and its text


def stamp_now(clock: Clock) -> str:
    """`stamp(clock())`; for the system clock (per request), from `time.time_ns()` with the
    text of the current second kept: a fifth of the cost of building a datetime."""
    global _second
    if clock is not system_clock:
        return stamp(clock())
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    second = _second
    if second[0] != seconds:
        second = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds)))
    return second[1] + str(1_000_000 + micros)[1:] + "Z"  # six digits, zero-padded


def parse_ts(text: str) -> datetime:
    """Parse an ISO-8601 time with a zone (`Z` or an offset); ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"not a time: {text!r}")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r}")
    return moment


def days_between(start: str, now: datetime) -> float:
    """Days from the time `start` to `now` (never negative)."""
    return max((now - parse_ts(start)).total_seconds() / 86400.0, 0.0)
