"""The `ts` every record carries: one format, from the system clock or an injected one."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from mlops_cli import timeutil
from mlops_cli.timeutil import parse_ts, stamp, stamp_now, system_clock

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def test_stamp_now_of_the_system_clock_is_the_stamp_of_that_moment() -> None:
    before = datetime.now(timezone.utc)
    found = stamp_now(system_clock)
    after = datetime.now(timezone.utc)
    assert STAMP.fullmatch(found)
    assert stamp(before) <= found <= stamp(after)
    assert before - timedelta(microseconds=1) <= parse_ts(found) <= after


def test_stamp_now_writes_each_second_it_keeps_as_its_own() -> None:
    timeutil._second = (0, "1970-01-01T00:00:00")  # a second long past, as if kept
    found = stamp_now(system_clock)
    assert not found.startswith("1970") and STAMP.fullmatch(found)


def test_stamp_now_of_an_injected_clock_is_that_clock_time() -> None:
    moment = datetime(2026, 11, 1, 12, 30, 5, 7, tzinfo=timezone(timedelta(hours=2)))
    assert stamp_now(lambda: moment) == "2026-11-01T10:30:05.000007Z"


@pytest.mark.parametrize("micros", [0, 7, 999_999])
def test_stamp_now_writes_six_digits_of_microseconds(
    monkeypatch: pytest.MonkeyPatch, micros: int
) -> None:
    seconds = 1_796_126_405  # 2026-12-01T12:00:05Z
    monkeypatch.setattr(timeutil.time, "time_ns", lambda: (seconds * 1_000_000 + micros) * 1000)
    expected = datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=micros)
    assert stamp_now(system_clock) == stamp(expected)
    assert stamp(expected).startswith("2026-12-01T12:00:05.")
