"""Drift sample lines to numpy columns without building an object per line.

A block of whole lines in the shape the writers produce, `{"ts":"...","prediction":P,
"confidence":C}` (the two numbers in either order, spaces allowed between tokens), is proved to
have that shape with a few passes of numpy and bytes methods, and its numbers are parsed by
orjson as one array. Any other block (escapes, other keys, control characters, non-ASCII bytes,
values that are not numbers) returns None, and the caller parses it line by line, which names
the bad line. Both ways give the same numbers: a block is taken here only if each of its lines
is JSON that the line-by-line parse reads as the same two values (tests/test_columns.py).
"""

from __future__ import annotations

from typing import Any

import orjson

_NUMBER_BYTES = b"0123456789.-+eE"
# A line with each string's text cut out, and its numbers and spaces.
_SKELETON = b'{"":"","":,"":}\n'
# The same line as six values of a flat JSON array: "", "", "", P, "", C.
_AS_ARRAY = bytes.maketrans(b"{}:\n", b"  ,,")
_PREDICTION, _CONFIDENCE = b'prediction"', b'confidence"'


def sample_columns(data: bytes) -> tuple[Any, Any] | None:
    """(predictions, confidences) of a block of whole sample lines, or None when the block is
    not all in the writers' shape."""
    import numpy as np

    if b"\\" in data:
        return None
    raw = np.frombuffer(data, np.uint8)
    quote = raw == 34
    # True from a string's opening quote up to the byte before its closing quote.
    inside = np.bitwise_xor.accumulate(quote.view(np.uint8)).view(bool)
    shape = raw[~inside | quote].tobytes()  # each string as ""
    skeleton = shape.translate(None, _NUMBER_BYTES + b" ")
    lines = len(skeleton) // len(_SKELETON)
    if not lines or skeleton != _SKELETON * lines:
        return None
    # Printable ASCII apart from the newlines that end the lines: no control character or
    # invalid UTF-8 that the JSON parser would refuse hides inside a string.
    if np.count_nonzero((raw - np.uint8(32)) > 95) != lines:
        return None
    # Four strings a line: the ts key, its value, the two number keys; where their text starts.
    starts = np.flatnonzero(quote & inside).reshape(lines, 4) + 1
    if not (_strings_at(data, starts[:, 0], 3) == b'ts"').all():
        return None
    third, fourth = (_strings_at(data, starts[:, k], 11) for k in (2, 3))
    pred_first = (third == _PREDICTION) & (fourth == _CONFIDENCE)
    if not (pred_first | ((third == _CONFIDENCE) & (fourth == _PREDICTION))).all():
        return None
    # The skeleton fixed where the colons, commas and strings are; the JSON grammar of the
    # array proves that each number sits whole in its place (a stray digit anywhere else
    # breaks it) and parses it.
    try:
        values = orjson.loads(b"[" + shape.translate(_AS_ARRAY)[:-1] + b"]")
    except orjson.JSONDecodeError:
        return None
    pred = np.array(values[3::6], dtype=np.float64)
    conf = np.array(values[5::6], dtype=np.float64)
    if not pred_first.all():
        pred, conf = np.where(pred_first, pred, conf), np.where(pred_first, conf, pred)
    return pred, conf


def _strings_at(data: bytes, offsets: Any, size: int) -> Any:
    """The `size` bytes of `data` from each offset (clipped to the end), as numpy strings:
    a key's text with its closing quote, compared with the key's at C speed."""
    import numpy as np

    every = np.ndarray((len(data) - size + 1,), f"S{size}", data, strides=(1,))
    return every[np.minimum(offsets, len(every) - 1)]
