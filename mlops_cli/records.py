"""The records streams hold: requests of A/B tests and serving metrics, and drift samples.

Pure checks (no I/O), used by the managers for single records and by the stores for batches.
Each returns the record when it is valid and raises ValidationError naming the field otherwise;
`where` prefixes the message (a batch's line number).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from .errors import ValidationError
from .limits import INFERENCE_TIME_MS, PREDICTION_ABS_MAX
from .timeutil import parse_ts

VARIANTS = ("control", "treatment")
REQUEST_FIELDS = {"variant", "inference_time_ms", "confidence", "error", "user_id", "ts"}
SAMPLE_FIELDS = {"prediction", "confidence", "ts"}
NUMBER = (int, float)


def check_finite(
    name: str, value: Any, low: float | None = None, high: float | None = None
) -> float:
    """A finite number within [low, high], or a ValidationError saying which bound it breaks."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{name} must be a number, not {value!r}", field=name)
    if not math.isfinite(value):
        raise ValidationError(f"{name} must be a finite number, not {value!r}", field=name)
    if low is not None and value < low:
        bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise ValidationError(f"{name} must be {bound}, not {value!r}", field=name)
    if high is not None and value > high:
        bound = f"between {low:g} and {high:g}" if low is not None else f"<= {high:g}"
        raise ValidationError(f"{name} must be {bound}, not {value!r}", field=name)
    return float(value)


def plain_number(value: Any) -> Any:
    """A numpy scalar (np.float64, np.int64, np.bool_) as the Python value it holds; anything
    else as it is, for the validators to judge. Services pass model outputs straight through."""
    if type(value) in NUMBER or isinstance(value, bool):
        return value
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        plain = item()
        if type(plain) in (int, float, bool):
            return plain
    return value


_NO_TS = object()


def _fast_ts(value: Any) -> bool:
    """No `ts`, or one that is an ISO-8601 time with a zone (checked in C, no message built);
    False sends the record to the checks that name what is wrong."""
    if value is _NO_TS:
        return True
    if type(value) is not str:
        return False
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


def check_ts(value: Any, where: str) -> None:
    """A caller-supplied `ts`: an ISO-8601 time with a zone."""
    try:
        parse_ts(value)
    except (ValueError, TypeError):
        raise ValidationError(
            f"{where}ts must be an ISO-8601 time with a zone, not {value!r}"
        ) from None


def validate_request(doc: Any, where: str = "") -> dict[str, Any]:
    """A recorded request with its fields checked; `where` prefixes messages (batch line)."""
    if type(doc) is dict and doc.keys() <= REQUEST_FIELDS and _fast_ts(doc.get("ts", _NO_TS)):
        # The common case, checked without building any message.
        t: Any = doc.get("inference_time_ms")
        c: Any = doc.get("confidence")
        if (
            doc.get("variant") in VARIANTS
            and type(t) in NUMBER
            and 0 <= t <= INFERENCE_TIME_MS.high
            and type(c) in NUMBER
            and 0 <= c <= 1
            and type(doc.get("error", False)) is bool
            and type(doc.get("user_id", "")) in (str, int)
        ):
            return doc
    if not isinstance(doc, dict):
        raise ValidationError(f"{where}expected a JSON object")
    unknown = set(doc) - REQUEST_FIELDS
    if unknown:
        raise ValidationError(f"{where}unknown field {sorted(unknown)[0]!r}")
    for key in ("variant", "inference_time_ms", "confidence"):
        if key not in doc:
            raise ValidationError(f"{where}missing {key!r}")
    if doc["variant"] not in VARIANTS:
        raise ValidationError(
            f"{where}variant must be control or treatment, not {doc['variant']!r}",
            field=f"{where}variant",
        )
    check_finite(f"{where}inference_time_ms", doc["inference_time_ms"], 0, INFERENCE_TIME_MS.high)
    check_finite(f"{where}confidence", doc["confidence"], 0, 1)
    if not isinstance(doc.get("error", False), bool):
        raise ValidationError(f"{where}error must be true or false, not {doc['error']!r}")
    if not isinstance(doc.get("user_id", ""), (str, int)):
        raise ValidationError(f"{where}user_id must be a string")
    if "ts" in doc:
        check_ts(doc["ts"], where)
    return doc


def validate_sample(doc: Any, where: str = "") -> dict[str, Any]:
    """A sample {prediction, confidence[, ts]}: both finite, confidence in [0, 1]."""
    if type(doc) is dict and doc.keys() <= SAMPLE_FIELDS and _fast_ts(doc.get("ts", _NO_TS)):
        # The common case, checked without building any message.
        p: Any = doc.get("prediction")
        c: Any = doc.get("confidence")
        if (
            type(p) in NUMBER
            and -PREDICTION_ABS_MAX <= p <= PREDICTION_ABS_MAX
            and type(c) in NUMBER
            and 0 <= c <= 1
        ):
            return doc
    if not isinstance(doc, dict):
        raise ValidationError(f"{where}expected a JSON object")
    unknown = set(doc) - SAMPLE_FIELDS
    if unknown:
        raise ValidationError(f"{where}unknown field {sorted(unknown)[0]!r}")
    for key in ("prediction", "confidence"):
        if key not in doc:
            raise ValidationError(f"{where}missing {key!r}")
    check_finite(f"{where}prediction", doc["prediction"], -PREDICTION_ABS_MAX, PREDICTION_ABS_MAX)
    check_finite(f"{where}confidence", doc["confidence"], 0, 1)
    if "ts" in doc:
        check_ts(doc["ts"], where)
    return doc
