"""Drift sample lines to numpy columns without building an object per line.

A block of whole lines in the shape the writers produce, `{"ts":"...","prediction":P,
"confidence":C}` (the two numbers in either order, spaces allowed between tokens), is proved to
have that shape with a few passes of numpy and bytes methods, and its numbers are parsed by
orjson as one array. Two tiers: `writer_columns` takes lines exactly as the writers space them
(compact, or json.dumps' spacing) from the positions of newlines and commas alone;
`general_columns` any spacing, from a running parity of quotes (slower: a pass that does not
vectorise). Any other block (escapes, other keys, control characters, non-ASCII bytes, values
that are not numbers) returns None, and the caller parses it line by line, which names the bad
line. All ways give the same numbers: a block is taken here only if each of its lines is JSON
that the line-by-line parse reads as the same two values (tests/test_columns.py).
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
_NAMES = (b"prediction", b"confidence")


def sample_columns(data: bytes) -> tuple[Any, Any] | None:
    """(predictions, confidences) of a block of whole sample lines, or None when the block is
    not all in the writers' shape."""
    found = writer_columns(data)
    return found if found is not None else general_columns(data)


def general_columns(data: bytes) -> tuple[Any, Any] | None:
    """sample_columns for any spacing: every string found by a running parity of quotes."""
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


# The words (8 bytes, little-endian) of the keys that follow a line's two commas, compact
# (`,"prediction":`, 14 bytes: the words at 0 and 6) or spaced as json.dumps spaces them
# (`, "prediction": `, 16 bytes: the words at 0 and 8).
def _word(text: bytes) -> int:
    return int.from_bytes(text, "little")


_COMPACT = {name: (_word(b',"' + name[:6]), _word(name[4:] + b'":')) for name in _NAMES}
_SPACED = {name: (_word(b', "' + name[:5]), _word(name[5:] + b'": ')) for name in _NAMES}
_HEAD = b'{"ts":"'
_HEAD_MASK = (1 << 56) - 1


def writer_columns(data: bytes) -> tuple[Any, Any] | None:
    """(predictions, confidences) of a block of whole lines each exactly
    `{"ts":"T","prediction":P,"confidence":C}` (the two keys in either order, compact or
    spaced as json.dumps spaces them), T a string with no escape, control character or
    non-ASCII byte; else None. Line positions come from one numpy scan (newlines and commas),
    the keys are compared as 8-byte words at the commas, everything but the numbers is
    blanked and orjson parses what is left as one array of numbers."""
    import numpy as np

    if b"\\" in data or b"[" in data or not data.isascii():
        return None
    raw = np.frombuffer(data, np.uint8)
    # Each line's two commas and its newline, in that order, and no other comma or newline.
    found = np.flatnonzero((raw == 10) | (raw == 44))
    lines = len(found) // 3
    if not lines or len(found) != 3 * lines or found[-1] != len(raw) - 1:
        return None
    marks = found.reshape(lines, 3)
    first, second, ends = marks[:, 0], marks[:, 1], marks[:, 2]
    if not ((raw[ends] == 10) & (raw[first] == 44) & (raw[second] == 44)).all():
        return None
    starts = np.empty(lines, np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    # Each line ends with `}`, has no control character but its newline and no quote but the
    # eight of its keys and ts (bytes below 35 are controls, the space, `!` and the quote).
    if not (raw[ends - 1] == 125).all() or not (raw[first - 1] == 34).all():
        return None
    if np.count_nonzero(raw < 35) != 9 * lines and (
        np.count_nonzero(raw < 32) != lines or np.count_nonzero(raw == 34) != 8 * lines
    ):
        return None
    words = np.ndarray((len(raw) - 7,), "<u8", data, strides=(1,))
    top = len(words) - 1
    if not ((words[np.minimum(starts, top)] & _HEAD_MASK) == _word(_HEAD)).all():
        return None
    both = marks[:, :2]
    w0, w6 = words[np.minimum(both, top)], words[np.minimum(both + 6, top)]
    kind = (w0 == _COMPACT[b"prediction"][0]) & (w6 == _COMPACT[b"prediction"][1])
    conf = (w0 == _COMPACT[b"confidence"][0]) & (w6 == _COMPACT[b"confidence"][1])
    if (kind | conf).all():  # compact, as orjson writes
        kinds: list[Any] = [kind[:, 0], kind[:, 1]]
        widths: list[Any] = [np.int64(14), np.int64(14)]
    else:
        w8 = words[np.minimum(both + 8, top)]
        spaced = (w0 == _SPACED[b"prediction"][0]) & (w8 == _SPACED[b"prediction"][1])
        kind |= spaced
        conf_spaced = (w0 == _SPACED[b"confidence"][0]) & (w8 == _SPACED[b"confidence"][1])
        spaced |= conf_spaced
        if not (kind | conf | conf_spaced).all():
            return None
        width = np.where(spaced, 16, 14)
        kinds, widths = [kind[:, 0], kind[:, 1]], [width[:, 0], width[:, 1]]
    pred_first = kinds[0]
    if not (pred_first != kinds[1]).all():  # one of each
        return None
    # Blank all but the numbers: the line up to its first number, the second key (not its
    # comma); the closing braces become commas and the whole an array.
    buf = bytearray(data)
    out = np.frombuffer(buf, np.uint8)
    _blank(out, starts, first + widths[0] - starts)
    _blank(out, second + 1, widths[1] - 1)
    out[ends - 1] = 44
    out[0], out[ends[-1] - 1] = 91, 93
    # Only digits, signs, points, exponents, commas and spaces may be left: anything that
    # orjson would take as another value (a string, literal, array or object) needs a quote,
    # a bracket or a letter above `e`.
    if int(out.max()) > 0x65:
        return None
    try:
        values = orjson.loads(buf)
    except orjson.JSONDecodeError:
        return None
    if len(values) != 2 * lines:  # a value took more than its place: two numbers in one
        return None
    both = np.fromiter(values, np.float64, 2 * lines)
    one, two = both[0::2], both[1::2]
    if pred_first.all():
        return one.copy(), two.copy()
    return np.where(pred_first, one, two), np.where(pred_first, two, one)


def _blank(out: Any, at: Any, widths: Any) -> None:
    """Spaces over `out[at[i] : at[i] + widths[i]]` for each i, one numpy call per width."""
    import numpy as np

    widths = np.broadcast_to(widths, at.shape)
    low, high = int(widths.min()), int(widths.max())
    for width in [low] if low == high else np.unique(widths).tolist():
        where = at if low == high else at[widths == width]
        view = np.ndarray((len(out) - width + 1,), f"S{width}", out, strides=(1,))
        view[where] = b" " * width


def _strings_at(data: bytes, offsets: Any, size: int) -> Any:
    """The `size` bytes of `data` from each offset (clipped to the end), as numpy strings:
    a key's text with its closing quote, compared with the key's at C speed."""
    import numpy as np

    every = np.ndarray((len(data) - size + 1,), f"S{size}", data, strides=(1,))
    return every[np.minimum(offsets, len(every) - 1)]
