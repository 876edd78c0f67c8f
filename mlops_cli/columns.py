"""Predictions and confidences of drift sample lines, parsed without a Python object per line.

The fast path accepts only what it can prove is a valid sample line: one compiled regular
expression must match the whole block, line by line, in the layouts this tool writes (compact
JSON, the keys `prediction`, `confidence` and an optional `ts` in any order, `ts` exactly as
`jsonl.utc_now()` writes it, a real calendar date). The numbers are then cut out by position
with numpy and converted by numpy's text parser (correctly rounded, as orjson is). Anything
else, and any number outside the sample rules (not finite, confidence outside [0, 1]), returns
None so the caller takes the validated orjson path, which names the bad line.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np

_NUMBER = rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_DATE = (
    rb"[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    rb"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    # 29 February of the leap years: divisible by 4, and by 400 when a century
    rb"|[0-9]{2}(?:0[48]|[2468][048]|[13579][26])-02-29|(?:[02468][048]|[13579][26])00-02-29"
)
_TS = rb'"ts":"(?!0000)(?:' + _DATE + rb')T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z"'
_PRED = rb'"prediction":' + _NUMBER
_CONF = rb'"confidence":' + _NUMBER
_LAYOUTS = [
    (_TS, _PRED, _CONF),
    (_PRED, _CONF),
    (_TS, _CONF, _PRED),
    (_CONF, _PRED),
    (_PRED, _TS, _CONF),
    (_CONF, _TS, _PRED),
    (_PRED, _CONF, _TS),
    (_CONF, _PRED, _TS),
]
_LINE = rb"\{(?:" + rb"|".join(rb",".join(keys) for keys in _LAYOUTS) + rb")\}\n"
# Possessive (Python 3.11+): no backtracking state kept per line, so memory stays flat.
_BLOCK = re.compile(rb"(?:" + _LINE + rb")*+") if sys.version_info >= (3, 11) else None

_MAX_NUMBER = 64  # longer numbers (valid, but never written by this tool) take the slow path
_READ_BLOCK = 8 << 20  # as jsonl.read_chunks, so both paths see the same chunks


def parse_sample_columns(block: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """(predictions, confidences) of a block of complete sample lines, or None if unproven."""
    if not block:
        return np.empty(0), np.empty(0)
    if _BLOCK is None or _BLOCK.fullmatch(block) is None:
        return None
    buf = np.frombuffer(block, dtype=np.uint8)
    # In a matched block 'p' occurs only in the key "prediction" and 'f' only in "confidence"
    # (timestamps hold digits, '-', ':', '.', 'T', 'Z'; numbers digits, '-', '+', '.', 'e', 'E').
    pred = _numbers(buf, np.flatnonzero(buf == ord("p")) + len(b'prediction":'))
    conf = _numbers(buf, np.flatnonzero(buf == ord("f")) + len(b'fidence":'))
    if pred is None or conf is None:
        return None
    lines = block.count(b"\n")
    if len(pred) != lines or len(conf) != lines:
        return None
    if not np.all(np.isfinite(pred)) or not np.all((conf >= 0) & (conf <= 1)):
        return None
    return pred, conf


def _numbers(buf: np.ndarray, starts: np.ndarray) -> np.ndarray | None:
    """Parse the JSON numbers starting at `starts`, each ended by ',' or '}'."""
    if starts.size == 0:
        return np.empty(0)
    delimiters = np.flatnonzero((buf == ord(",")) | (buf == ord("}")))
    ends = delimiters[np.searchsorted(delimiters, starts)]
    lengths = ends - starts
    width = int(lengths.max()) + 1  # at least one space after each number
    if width > _MAX_NUMBER:
        return None
    padded = np.full(buf.size + width, ord(" "), dtype=np.uint8)
    padded[: buf.size] = buf
    rows = np.lib.stride_tricks.sliding_window_view(padded, width)[starts]
    rows[np.arange(width) >= lengths[:, None]] = ord(" ")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a token numpy cannot read: not proven, slow path
        try:
            values: np.ndarray = np.fromstring(rows.tobytes(), dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning):
            return None
    return values


def read_sample_columns(
    path: Path, start: int, stop: int | None, limit: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """At most `limit` samples of the whole lines from byte `start` (to `stop`), or None.

    Chunks as `jsonl.read_chunks` does; None as soon as one chunk is not provably well formed,
    so the caller re-reads with the validating path (a torn last line is left out, as there).
    """
    preds: list[np.ndarray] = []
    confs: list[np.ndarray] = []
    n = 0
    try:
        f = open(path, "rb")  # noqa: SIM115 -- closed below; a missing log is an empty one
    except FileNotFoundError:
        return np.empty(0), np.empty(0)
    with f:
        f.seek(start)
        offset, carry = start, b""
        while n < limit:
            want = _READ_BLOCK if stop is None else min(_READ_BLOCK, stop - offset - len(carry))
            data = f.read(want) if want > 0 else b""
            if not data:
                break
            data = carry + data
            whole = data.rfind(b"\n") + 1
            carry = data[whole:]
            columns = parse_sample_columns(data[:whole])
            if columns is None:
                return None
            offset += whole
            take = limit - n
            preds.append(columns[0][:take])
            confs.append(columns[1][:take])
            n += len(preds[-1])
    if not preds:
        return np.empty(0), np.empty(0)
    return np.concatenate(preds), np.concatenate(confs)
