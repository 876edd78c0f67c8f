"""The input features a drift sample may carry: their limits and validation (pure, no I/O).

A sample's `features` is a mapping of feature name to value: a number, a string, a boolean, or
None (missing; a feature left out of a sample is missing too). Limits, so one sample never
poisons a log or a database row: at most FEATURES_MAX features a sample, names of at most
NAME_MAX_CHARS characters of letters, digits and `_.:-`, strings of at most
STRING_MAX_BYTES bytes of UTF-8 without a NUL character, numbers finite (whole numbers within
64 bits).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .errors import ValidationError

FEATURES_MAX = 1000
NAME_MAX_CHARS = 128
STRING_MAX_BYTES = 256
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_INT_LOW, _INT_HIGH = -(2**63), 2**63


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:50]}... ({len(text):,} characters)"


def validate_features(value: Any, where: str = "") -> dict[str, Any]:
    """The features of one sample, checked: returns them as a plain dict (numpy scalars as
    the Python values they hold), or raises ValidationError naming the first bad feature."""
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"{where}features must be an object of name: value, not {_shown(value)}"
        )
    if len(value) > FEATURES_MAX:
        raise ValidationError(
            f"{where}features holds {len(value):,} features; at most {FEATURES_MAX:,} a sample"
        )
    out: dict[str, Any] = {}
    for name, item in value.items():
        if type(name) is not str or NAME_PATTERN.fullmatch(name) is None:
            raise ValidationError(
                f"{where}feature name {_shown(name)} must be 1 to {NAME_MAX_CHARS} characters "
                "of letters, digits and _.:-"
            )
        out[name] = _value(name, item, where)
    return out


def _value(name: str, item: Any, where: str) -> Any:
    kind = type(item)
    if item is None or kind is bool:
        return item
    if kind is float or kind is int:
        pass
    elif kind is str:
        if "\x00" in item:
            raise ValidationError(f"{where}feature {name!r} holds a NUL character")
        try:
            size = len(item.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValidationError(f"{where}feature {name!r} is not valid UTF-8 text") from None
        if size > STRING_MAX_BYTES:
            raise ValidationError(
                f"{where}feature {name!r} is {size:,} bytes long; at most {STRING_MAX_BYTES}"
            )
        return item
    else:
        plain = getattr(item, "item", None)
        if callable(plain) and type(item).__module__ == "numpy":
            return _value(name, plain(), where)
        raise ValidationError(
            f"{where}feature {name!r} must be a number, a string, true/false or null, "
            f"not {_shown(item)}"
        )
    if kind is float and not math.isfinite(item):
        raise ValidationError(f"{where}feature {name!r} must be a finite number, not {item!r}")
    if kind is int and not _INT_LOW <= item < _INT_HIGH:
        raise ValidationError(f"{where}feature {name!r} must fit 64 bits as a whole number")
    return item


_FEATURES_KEY = b',"features":{'


def without_features(data: bytes) -> bytes | None:
    """A block of sample lines with each line's trailing `"features"` object cut off, for the
    output's fast column reader (columns.sample_columns), which knows only the seed's shape;
    None when the block holds no features. A line whose features object is not the last
    value, or is spelled otherwise, keeps it, and the reader then parses the block line by
    line. The features are not parsed here: the feature check parses them (and names a bad
    line), and the reference's were parsed when it was profiled."""
    if _FEATURES_KEY not in data:
        return None
    out = []
    for line in data.split(b"\n")[:-1]:
        cut = line.find(_FEATURES_KEY)
        out.append(line if cut < 0 or not line.endswith(b"}}") else line[:cut] + b"}")
    out.append(b"")
    return b"\n".join(out)
