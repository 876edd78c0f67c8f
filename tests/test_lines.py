"""Line bounds: a line over LINE_MAX_BYTES is a bad line, read in one pass in bounded memory."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mlops_cli import batch, jsonl
from mlops_cli.errors import StateError
from mlops_cli.limits import LINE_MAX_BYTES

LONG = jsonl.OVERLONG_LINE


def test_the_line_limit_is_one_mebibyte() -> None:
    assert LINE_MAX_BYTES == 1_048_576


def _lines(reads: list[bytes]) -> list[tuple[bytes, int, bool]]:
    return [tuple(got) for got in jsonl.whole_lines(reads)]  # type: ignore[misc]


def test_whole_lines_at_the_limit_and_one_past_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a 4-byte limit (lines counted without their newline): 'abcd' is kept whole
    however the reads cut it, 'abcde' is replaced; the bytes consumed count the originals."""
    monkeypatch.setattr(jsonl, "LINE_MAX_BYTES", 4)
    assert _lines([b"ab", b"cd\nx"]) == [(b"abcd\n", 5, False), (b"x", 6, True)]
    assert _lines([b"ab", b"cde\nx"]) == [(LONG + b"\n", 6, False), (b"x", 7, True)]
    # passed over across many reads, never held: the tail after it is read as usual
    assert _lines([b"abc", b"de", b"fg", b"h\nok\n"]) == [
        (LONG + b"\nok\n", 12, False),
        (b"", 12, True),
    ]
    # an over-long line left over after a read's whole lines, and an over-long torn tail
    assert _lines([b"a\nbcdefg", b"h"]) == [(b"a\n", 2, False), (LONG, 9, True)]
    assert _lines([b"a\nbcdefg", b"h\n"]) == [
        (b"a\n", 2, False),
        (LONG + b"\n", 10, False),
        (b"", 10, True),
    ]


def _log(tmp_path: Path, *lines: bytes) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_a_log_with_an_over_long_line_names_it_or_skips_it(tmp_path: Path) -> None:
    big = b'{"pad":"' + b"x" * LINE_MAX_BYTES + b'"}'  # valid JSON, over the limit
    at_limit = b'{"pad":"' + b"x" * (LINE_MAX_BYTES - 10) + b'"}'  # exactly the limit
    assert len(at_limit) == LINE_MAX_BYTES
    path = _log(tmp_path, b'{"a":1}', at_limit, big, b'{"a":2}')
    for block in (1 << 16, 8 << 20):  # carried across reads, and held whole in one read
        with pytest.raises(StateError, match=r"t\.jsonl: line 3 is longer than 1 MiB"):
            list(jsonl.read_chunks(path, block=block))
        rows = [
            r for c in jsonl.read_chunks(path, skip_invalid=True, block=block) for r in c.records
        ]
        assert [r.get("a") for r in rows] == [1, None, 2]
        skipped = [
            n for c in jsonl.read_chunks(path, skip_invalid=True, block=block) for n in c.skipped
        ]
        assert skipped == [3]
    assert jsonl.read_from(path, skip_invalid=True).end == path.stat().st_size
    with pytest.raises(StateError, match="line 3 is longer than 1 MiB"):
        jsonl.read_from(path)


def test_a_batch_with_an_over_long_line_is_refused_naming_it(tmp_path: Path) -> None:
    from mlops_cli.records import validate_sample

    good = b'{"prediction": 0.5, "confidence": 0.9}\n'
    long_line = b'{"prediction": 0.5, "confidence": 0.9' + b" " * LINE_MAX_BYTES + b"}\n"
    data = good * 3 + long_line + good
    log = tmp_path / "s.jsonl"
    for source in (data, io.BufferedReader(io.BytesIO(data))):  # type: ignore[arg-type]
        with pytest.raises(
            batch.BatchError,
            match=r"1 bad line\(s\), nothing recorded: line 4: "
            r"longer than 1 MiB \(1,048,576 bytes\)",
        ):
            batch.append_batch(log, source, validate_sample, 1.0, batch_id="b")
    assert not log.exists()


def test_a_line_near_the_limit_is_stamped_compactly_to_stay_within_it() -> None:
    """The stamp adds len(prefix) - 1 bytes: a line of LINE_MAX_BYTES - that many bytes is
    stamped as it is (exactly LINE_MAX_BYTES then); one byte more is written compactly."""
    import orjson

    prefix = b'{"ts":"2026-11-01T00:00:00.000000Z",'
    room = LINE_MAX_BYTES - (len(prefix) - 1)

    def padded(size: int) -> bytes:
        head, tail = b'{"prediction": 0.5, "confidence": 0.9', b"}"
        return head + b" " * (size - len(head) - len(tail)) + tail

    small = b'{"prediction": 0.25, "confidence": 0.5}'
    fits = batch.stamped(prefix, small + b"\n" + padded(room) + b"\n")
    assert (len(prefix), len(small)) == (36, 39)  # counted by hand
    assert [len(line) for line in fits.split(b"\n")] == [36 + 39 - 1, LINE_MAX_BYTES, 0]
    over = batch.stamped(prefix, small + b"\n" + padded(room + 1) + b"\n")
    kept, compact, end = over.split(b"\n")
    assert kept == prefix + small[1:] and end == b""
    assert compact == b'{"ts":"2026-11-01T00:00:00.000000Z","prediction":0.5,"confidence":0.9}'
    assert orjson.loads(compact)["confidence"] == 0.9


def test_count_reads_past_a_line_longer_than_its_read(tmp_path: Path) -> None:
    """A log line of more than a read (1 MiB, as an older version could store) is counted,
    and so is every line after it."""
    from mlops_cli import Project

    store = Project.init(tmp_path / "proj").store
    stream = "drift/gnn/1.0.0/production"
    good = b'{"prediction": 0.5, "confidence": 0.9}\n'
    path = store.path(stream)  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(good + b'{"pad":"' + b"x" * (3 << 20) + b'"}\n' + good * 2 + b'{"torn')
    assert store.count(stream) == 4
    with path.open("ab") as f:
        f.write(b'":1}\n' + good)
    assert store.count(stream) == 6  # counted on from where the last count stopped


def test_a_line_over_the_room_is_found_wherever_it_starts() -> None:
    """The cheap look for a long line misses none: a line of room + 1 bytes is found at every
    offset; lines of at most 3 bytes (under half the room of 8) never send a chunk to the
    exact look."""
    for start in range(20):
        data = b"a" * start + b"\n" + b"x" * 9 + b"\n" + b"ab\n" * 5
        assert batch._may_hold_a_line_over(data, 8), start
    assert not batch._may_hold_a_line_over(b"abc\n" * 50, 8)
