"""The fast sample parse against the validated orjson path: never more lenient, same numbers."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_cli import columns, drift
from mlops_cli.columns import parse_sample_columns, read_sample_columns
from mlops_cli.errors import ValidationError


def slow_parse(block: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """What the validated path makes of a block: the columns, or None if any line is bad."""
    preds, confs = [], []
    for line in block.split(b"\n")[:-1]:
        try:
            doc = drift.validate_sample(orjson.loads(line))
        except (orjson.JSONDecodeError, ValidationError):
            return None
        preds.append(doc["prediction"])
        confs.append(doc["confidence"])
    return np.array(preds, dtype=np.float64), np.array(confs, dtype=np.float64)


def utc_ts(moment: datetime) -> str:
    """A `ts` as jsonl.utc_now() writes it."""
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


moments = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(timezone.utc)
)
finite = st.floats(allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0.0, max_value=1.0)
number_text = st.one_of(
    finite.map(lambda x: orjson.dumps(x).decode()),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(
        [
            "0",
            "-0",
            "1",
            "0.5",
            "1.0",
            "1e0",
            "1E+0",
            "1e-400",
            "-1e-400",
            "2e308",
            "1e400",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "-",
            "NaN",
            "Infinity",
            "-Infinity",
            "true",
            "null",
            '"0.5"',
            "0x1",
            "1_0",
            "1.5e3",
            "0.99999999999999999",
            "1.0000000000000001",
        ]
    ),
)
# Leap days and the edges of each field: only real instants are valid.
BAD_TS_PARTS = [
    ("2025-02-29", "00:00:00"),
    ("2024-02-29", "00:00:00"),
    ("1900-02-29", "00:00:00"),
    ("2000-02-29", "00:00:00"),
    ("0000-01-01", "00:00:00"),
    ("2026-13-01", "00:00:00"),
    ("2026-04-31", "00:00:00"),
    ("2026-01-01", "24:00:00"),
    ("2026-01-01", "00:60:00"),
    ("2026-01-01", "00:00:60"),
]
ts_text = st.one_of(
    moments.map(lambda m: f'"{utc_ts(m)}"'),
    moments.map(lambda m: f'"{m.isoformat()}"'),  # +00:00, fraction only when non-zero
    st.sampled_from(
        [f'"{day}T{time}.000000Z"' for day, time in BAD_TS_PARTS]
        + ['"2026-01-01T00:00:00.000000"', '"2026-01-01"', '"x"', "null", "12"]
    ),
)


@st.composite
def sample_line(draw: st.DrawFn) -> bytes:
    fields = {
        "prediction": draw(number_text),
        "confidence": draw(st.one_of(unit.map(lambda x: orjson.dumps(x).decode()), number_text)),
    }
    if draw(st.booleans()):
        fields["ts"] = draw(ts_text)
    keys = draw(st.permutations(sorted(fields)))
    keys = [k for k in keys if draw(st.integers(0, 20)) > 0]  # sometimes a key goes missing
    if draw(st.integers(0, 15)) == 0:
        keys.append(draw(st.sampled_from(["extra", "prediction", "ts", "Prediction"])))
    parts = [f'"{k}":{fields.get(k, "1")}' for k in keys]
    sep = draw(st.sampled_from([",", ",", ",", ", "]))
    text = "{" + sep.join(parts) + "}"
    if draw(st.integers(0, 15)) == 0:
        text = draw(st.sampled_from([" ", "\r", "[", "]", "{}", '"'])) + text
    return text.encode()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(sample_line(), max_size=8))
def test_fast_parse_never_accepts_what_the_validator_rejects(lines: list[bytes]) -> None:
    block = b"".join(line + b"\n" for line in lines)
    fast, slow = parse_sample_columns(block), slow_parse(block)
    if fast is not None:
        assert slow is not None, block
        assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1]), block


@st.composite
def written_line(draw: st.DrawFn) -> bytes:
    """A line as DriftDetector writes it, or as a caller writes one: compact, any key order."""
    doc = {"ts": utc_ts(draw(moments)), "prediction": draw(finite), "confidence": draw(unit)}
    keys = draw(st.permutations(list(doc)))
    if draw(st.booleans()):
        keys = [k for k in keys if k != "ts"]
    return orjson.dumps({k: doc[k] for k in keys})


@settings(max_examples=300, deadline=None)
@given(st.lists(written_line(), max_size=20))
def test_fast_parse_takes_every_line_the_tool_writes(lines: list[bytes]) -> None:
    block = b"".join(line + b"\n" for line in lines)
    fast, slow = parse_sample_columns(block), slow_parse(block)
    assert fast is not None and slow is not None, block
    assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
    assert fast[0].dtype == np.float64 and len(fast[0]) == len(lines)


@pytest.mark.parametrize(
    "block",
    [
        b'{"prediction":0.5,"confidence":0.5}',  # not a complete line
        b'{"prediction":0.5,"confidence":0.5}\n\n',  # a blank line
        b'{"prediction":0.5,"confidence":1.0000001}\n',
        b'{"prediction":1e400,"confidence":0.5}\n',
        b'{"prediction":0.5,"confidence":-0.0001}\n',
        b'{"prediction":0.5}\n',
        b'{"prediction":0.5,"confidence":0.5,"extra":1}\n',
        b'{"ts":"2025-02-29T00:00:00.000000Z","prediction":0.5,"confidence":0.5}\n',
        b'{"prediction":0.5,"confidence":0.5}\r\n',
        b'{"prediction":' + b"1" * 80 + b',"confidence":0.5}\n',  # valid, but left to orjson
    ],
)
def test_unproven_blocks_fall_back(block: bytes) -> None:
    assert parse_sample_columns(block) is None


def test_read_sample_columns_reads_what_read_columns_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "production.jsonl"
    lines = [
        orjson.dumps({"ts": "2026-01-01T00:00:00.000000Z", "prediction": p, "confidence": c})
        for p, c in zip(rng.normal(size=3000).tolist(), rng.random(3000).tolist(), strict=True)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n" + b'{"prediction":0.1,"conf')  # a torn tail
    monkeypatch.setattr(columns, "_READ_BLOCK", 4096)  # many chunks
    start = len(lines[0]) + 1
    for stop, limit in [(None, 2500), (None, 5000), (path.stat().st_size - 23, 5000)]:
        fast = read_sample_columns(path, start, stop, limit)
        slow = drift.read_columns(path, start, stop, limit)
        assert fast is not None
        assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
    assert fast[0][0] == orjson.loads(lines[1])["prediction"] and len(fast[0]) == 2999


def test_read_sample_columns_leaves_a_bad_chunk_to_the_validator(tmp_path: Path) -> None:
    path = tmp_path / "reference.jsonl"
    good = b'{"prediction":0.5,"confidence":0.5}\n'
    path.write_bytes(good * 5 + b'{"prediction":0.5}\n' + good)
    assert read_sample_columns(path, 0, None, 100) is None
    assert read_sample_columns(path, 0, None, 3) is None  # the whole chunk, as read_chunks
    assert read_sample_columns(path, 0, 5 * len(good), 100) is not None


def test_missing_log_is_empty(tmp_path: Path) -> None:
    got = read_sample_columns(tmp_path / "none.jsonl", 0, None, 10)
    assert got is not None and got[0].size == 0 and got[1].size == 0
