"""Sample lines to columns without a Python object per line (mlops_cli/columns.py): whenever
the block parse takes a block, it gives what parsing each line with orjson gives, bit for bit;
everything else is left to the line-by-line parse, which names a bad line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_cli import ModelVersion, Project
from mlops_cli.columns import general_columns, sample_columns, writer_columns
from mlops_cli.errors import StateError
from mlops_cli.store.files import read_columns

TS = "2026-11-27T04:12:21.123456Z"

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
numbers = st.one_of(
    finite,
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0.0, -0.0, 1e-7, 2**63 - 1, -(2**63), 1.5e300, 5e-324]),
)
TIERS = [sample_columns, writer_columns, general_columns]


def line(prediction: Any, confidence: Any, style: int, ts: str = TS) -> bytes:
    """A sample line as a writer makes it: orjson compact (the API), a batch line with the
    stamp spliced in (json.dumps spacing, either key order)."""
    if style == 0:
        doc = {"ts": ts, "prediction": prediction, "confidence": confidence}
        return orjson.dumps(doc) + b"\n"
    pair = {"prediction": prediction, "confidence": confidence}
    if style == 2:
        pair = {"confidence": confidence, "prediction": prediction}
    return b'{"ts":"' + ts.encode() + b'",' + json.dumps(pair).encode()[1:] + b"\n"


def per_line(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """The reference: each line parsed by orjson, taken only if it is exactly a sample with a
    string ts and two numbers."""
    pred, conf = [], []
    for raw in data.split(b"\n")[:-1]:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if (
            not isinstance(doc, dict)
            or raw.count(b'"') != 8
            or set(doc)
            != {
                "ts",
                "prediction",
                "confidence",
            }
        ):
            return None
        p, c = doc["prediction"], doc["confidence"]
        if type(p) not in (int, float) or type(c) not in (int, float) or type(doc["ts"]) is not str:
            return None
        pred.append(p)
        conf.append(c)
    return np.array(pred, dtype=np.float64), np.array(conf, dtype=np.float64)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float64 and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("columns", TIERS)
@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.tuples(numbers, numbers, st.integers(0, 2)), min_size=1, max_size=40))
def test_the_writers_lines_are_taken_with_the_same_values(
    columns: Any, rows: list[tuple[Any, Any, int]]
) -> None:
    data = b"".join(line(p, c, style) for p, c, style in rows)
    got, want = columns(data), per_line(data)
    assert got is not None and want is not None
    assert same_bits(got[0], want[0]) and same_bits(got[1], want[1])


@pytest.mark.parametrize("columns", TIERS[1:])
@settings(max_examples=2000, deadline=None)
@given(
    rows=st.lists(st.tuples(finite, finite, st.integers(0, 2)), min_size=1, max_size=6),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["replace", "insert", "delete"]),
            st.integers(0, 10_000),
            st.sampled_from([*b'"\\{}[]:, \t\r\n0123456789.-+eEtsx\x00\x7f', 0xC3, 0xFF]),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_a_changed_block_is_taken_only_if_each_line_still_parses_to_the_same(
    columns: Any, rows: list[tuple[float, float, int]], edits: list[tuple[str, int, int]]
) -> None:
    data = bytearray(b"".join(line(p, c, style) for p, c, style in rows))
    for how, where, byte in edits:
        at = where % (len(data) + 1)
        if how == "insert":
            data[at:at] = bytes([byte])
        elif at < len(data):
            if how == "replace":
                data[at] = byte
            else:
                del data[at]
    block = bytes(data)
    if not block.endswith(b"\n"):
        block = block[: block.rfind(b"\n") + 1]
    got = columns(block)
    if got is not None:
        want = per_line(block)
        assert want is not None, block
        assert same_bits(got[0], want[0]) and same_bits(got[1], want[1]), block


@pytest.mark.parametrize(
    "bad",
    [
        rb'{"ts":"a\"b","prediction":1,"confidence":0.5}',  # an escape
        b'{"ts":"x","prediction":1,"prediction":0.5}',  # a key twice
        b'{"ts":"x","confidence":1,"confidence":0.5}',
        b'{"prediction":1,"confidence":0.5,"ts":"x"}',  # ts not first
        b'{"ts":"x","prediction":true,"confidence":0.5}',
        b'{"ts":"x","prediction":"1","confidence":0.5}',
        b'{"ts":"x","prediction":null,"confidence":0.5}',
        b'{"ts":"x","prediction":[1],"confidence":0.5}',
        b'{"ts":1,"prediction":1,"confidence":0.5}',
        b'{"ts":"x","prediction":1,"confidence":0.5,"extra":1}',
        b'{"ts":"x","prediction":1}',
        b'{"ts":"x","prediction":1,"confidence":0.5}\r',
        b'{"ts":"x\ty","prediction":1,"confidence":0.5}',
        '{"ts":"é","prediction":1,"confidence":0.5}'.encode(),
        b'{"ts":"x","prediction":1 2,"confidence":0.5}',
        b'{"ts":"x","prediction":01,"confidence":0.5}',
        b'{"ts":"x","prediction":1e999,"confidence":0.5}',
        b'{"ts":"x","prediction":,"confidence":0.5}',
        b'{"ts":"x","predictioN":1,"confidence":0.5}',
        b"",  # a blank line
    ],
)
@pytest.mark.parametrize("columns", TIERS)
def test_anything_else_is_left_to_the_line_by_line_parse(columns: Any, bad: bytes) -> None:
    good = line(0.25, 0.5, 0)
    assert columns(good) is not None
    assert columns(good + bad + b"\n" + good) is None


def test_read_columns_mixes_both_parses_over_many_blocks(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    pred, conf = rng.normal(0, 3, 60_000), rng.random(60_000)
    rows = [
        line(float(p), float(c), i % 3) for i, (p, c) in enumerate(zip(pred, conf, strict=True))
    ]
    rows[30_000] = b'{"confidence": 0.5, "prediction": 2, "ts": "late"}\n'  # only per line
    pred[30_000], conf[30_000] = 2, 0.5
    log = tmp_path / "production.jsonl"
    log.write_bytes(b"".join(rows))
    assert log.stat().st_size > 3 << 20  # several of read_columns' 1 MB blocks
    got_pred, got_conf, skipped = read_columns(log, 0, None, 1 << 40)
    assert skipped == 0 and same_bits(got_pred, pred) and same_bits(got_conf, conf)
    start = sum(len(r) for r in rows[:1000])  # a window from line 1,001 on
    got_pred, _, _ = read_columns(log, start, None, 10_000)
    assert same_bits(got_pred, pred[1000:11_000])


def test_a_bad_line_deep_in_a_window_is_named_from_the_top(tmp_path: Path) -> None:
    rows = [line(0.1 * i, 0.5, 0) for i in range(80_000)]
    rows[70_000] = b'{"ts":"x","prediction":"high","confidence":0.5}\n'
    rows[75_000] = b'{"ts":"x","prediction":\n'
    log = tmp_path / "production.jsonl"
    log.write_bytes(b"".join(rows))
    start = sum(len(r) for r in rows[:20_000])
    with pytest.raises(StateError, match="line 70001 is not a valid sample"):
        read_columns(log, start, None, 1 << 40)
    rows[70_000] = line(1.0, 0.5, 0)
    log.write_bytes(b"".join(rows))
    with pytest.raises(StateError, match="line 75001 is not a JSON object"):
        read_columns(log, start, None, 1 << 40)
    pred, _, skipped = read_columns(log, start, None, 1 << 40, skip_invalid=True)
    assert skipped == 1 and len(pred) == 60_000 - 1
    assert math.isclose(pred[-1], 0.1 * 79_999)


def test_the_real_writers_lines_are_taken(project: Project) -> None:
    project.registry.register_version(ModelVersion("gnn", "1.0.0", model_path="/m"))
    detector = project.drift_detector("gnn", "1.0.0")
    batch = "".join(
        json.dumps({"prediction": 0.5 + i / 100, "confidence": 0.9}) + "\n" for i in range(50)
    )
    detector.add_reference(batch.encode())  # json.dumps spacing, the stamp spliced in
    for i in range(50):
        detector.add_production_sample(-1e-7 * i, 0.25)
    for kind in ("reference", "production"):
        data = project.drift_log("gnn", "1.0.0", kind).read_bytes()
        got, want = sample_columns(data), per_line(data)
        assert got is not None and want is not None
        assert same_bits(got[0], want[0]) and same_bits(got[1], want[1])


@pytest.mark.parametrize(
    "lines",
    [
        [
            b'{"ts":"x","prediction":1e5,"confidence":1E-3}',
            b'{"ts":"y","prediction":-0,"confidence":1}',
        ],
        [
            b'{"ts":"x","confidence":0.5,"prediction":-2.5e-300}',
            b'{"ts":"","prediction":7,"confidence":0}',
        ],
        [b'{"ts":"x", "prediction": 12345678901234567890123, "confidence": 0.0}'],
        [b'{"ts":"x","prediction":1 ,"confidence": 0.5}'],  # JSON spaces around a number
        [
            b'{"ts":"2026-11-27T04:12:21Z","prediction":3,"confidence":0.125}',
            b'{"ts":"a b c:{}","prediction":1,"confidence":0.5}',
        ],
    ],
)
def test_the_writer_tier_takes_numbers_in_every_json_form(lines: list[bytes]) -> None:
    """Exponents, integers past 64 bits, field order, either spacing, ts of any length and
    text: the writer tier takes them and agrees with orjson line by line."""
    data = b"".join(x + b"\n" for x in lines)
    got, want = writer_columns(data), per_line(data)
    assert got is not None and want is not None
    assert same_bits(got[0], want[0]) and same_bits(got[1], want[1])


@pytest.mark.parametrize(
    "bad",
    [
        b'{"ts":"x","prediction":1,"confidence":0.5,"extra":1}',  # another field
        b'{"ts":"x","prediction":1 2,"confidence":0.5}',  # two numbers in one place
        b'{"ts":"x,y","prediction":1,"confidence":0.5}',  # a comma in ts
        b'{"ts":"x","prediction":1,"confidence":0.5} ',
        b'{"ts":"x","prediction":-,"confidence":0.5}',
        b'{"ts":"x","prediction":1.,"confidence":0.5}',
        b'{"ts":"x","prediction":.5,"confidence":0.5}',
        b'{"ts":"x","prediction":+1,"confidence":0.5}',
        b'{"ts":"x","prediction":1e,"confidence":0.5}',
        b'{"ts":"x","prediction":1}{"a":2,"confidence":0.5}',
        b'{"ts":"x","prediction":1,"confidence":0.5}}',
        b'{"ts":"x","prediction":1,"confidence":0.5,}',
        b'{"ts":"x","prediction":1,"prediction":0.5}',
        b'{"ts":"[","prediction":1,"confidence":0.5}',
    ],
)
def test_the_writer_tier_leaves_other_lines_to_the_next(bad: bytes) -> None:
    good = line(0.25, 0.5, 0)
    assert writer_columns(good + bad + b"\n" + good) is None


def test_a_value_out_of_bounds_is_named_by_its_line(tmp_path: Path) -> None:
    """The block parse checks the bounds over the arrays; a block outside them is read line by
    line, which names the line, or skips it with skip_invalid."""
    rows = [line(0.1 * i, 0.5, 0) for i in range(30_000)]
    rows[25_000] = line(0.5, 1.5, 0)  # a confidence above 1
    rows[26_000] = line(2e12, 0.5, 0)  # a prediction past PREDICTION_ABS_MAX (1e12)
    log = tmp_path / "production.jsonl"
    log.write_bytes(b"".join(rows))
    assert writer_columns(b"".join(rows[24_990:25_010])) is not None  # JSON-wise fine
    with pytest.raises(StateError, match="line 25001 is not a valid sample"):
        read_columns(log, 0, None, 1 << 40)
    pred, conf, skipped = read_columns(log, 0, None, 1 << 40, skip_invalid=True)
    assert skipped == 2 and len(pred) == 30_000 - 2 and conf.max() == 0.5
    rows[25_000] = line(0.5, 1, 0)  # the bounds themselves are in
    rows[26_000] = line(-1e12, 0, 0)
    log.write_bytes(b"".join(rows))
    pred, conf, skipped = read_columns(log, 0, None, 1 << 40)
    assert skipped == 0 and pred[26_000] == -1e12 and conf[25_000] == 1


def test_sample_blocks_are_whole_lines_through_long_lines_and_a_torn_tail(tmp_path: Path) -> None:
    """read_columns' blocks: each read once and cut at its last newline; a line longer than a
    block (and what follows it) goes on through jsonl.read_blocks, which reports a torn tail."""
    from mlops_cli.store.files import _sample_blocks

    rows = [line(0.5 * i, 0.5, 0) for i in range(40)]
    rows[7] = line(1.0, 0.5, 0, ts="t" * 300)  # longer than the 64-byte blocks below
    whole = b"".join(rows)
    log = tmp_path / "production.jsonl"
    log.write_bytes(whole + b'{"ts":"x","predic')  # a torn tail
    blocks = list(_sample_blocks(log, 0, None, 64))
    data = [b for b in blocks if b.data]
    assert b"".join(b.data for b in data) == whole
    assert all(b.data.endswith(b"\n") and b.end - b.start == len(b.data) for b in data)
    assert [b.start for b in data[1:]] == [b.end for b in data[:-1]]
    assert blocks[-1].data == b"" and blocks[-1].torn_bytes == len(b'{"ts":"x","predic')
    start, stop = len(b"".join(rows[:3])), len(b"".join(rows[:30]))
    assert b"".join(b.data for b in _sample_blocks(log, start, stop, 64)) == whole[start:stop]
    assert list(_sample_blocks(tmp_path / "none.jsonl", 0, None, 64)) == []
    pred, _, _ = read_columns(log, 0, None, 1 << 40)
    assert pred.tolist() == [1.0 if i == 7 else 0.5 * i for i in range(40)]


def test_tail_span_counts_lines_back_through_large_blocks(tmp_path: Path) -> None:
    """The window's start, found reading backwards in blocks up to 1 MB (counted by numpy
    past 256 KB): the byte after the newline `count` lines before the end."""
    from mlops_cli.jsonl import tail_span

    rows = [line(float(i), 0.5, 0) for i in range(60_000)]  # about 4.5 MB
    log = tmp_path / "production.jsonl"
    log.write_bytes(b"".join(rows) + b"{torn")
    for count in (1, 1000, 45_000, 59_999, 60_000, 70_000):
        start, end, torn = tail_span(log, count)
        assert (start, end, torn) == (len(b"".join(rows[:-count])), len(b"".join(rows)), 5)
