"""The records streams hold: requests of A/B tests and serving metrics, and drift samples.

Pure checks (no I/O), used by the managers for single records and by the stores for batches.
Each returns the record when it is valid and raises ValidationError naming the field otherwise;
`where` prefixes the message (a batch's line number).
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

from .errors import ValidationError
from .limits import (
    INFERENCE_TIME_MS,
    PREDICTION_ABS_MAX,
    TS_FUTURE_S,
    TS_MIN_EPOCH_S,
    USER_ID_MAX_BYTES,
    check_text,
)
from .timeutil import parse_ts

VARIANTS = ("control", "treatment")
REQUEST_FIELDS = {"variant", "inference_time_ms", "confidence", "error", "user_id", "ts", "step"}
MAX_RAMP_STEP = 20  # a ramp's steps (ramp.MAX_STEPS); a request's `step` is 1 to this
SAMPLE_FIELDS = {"prediction", "confidence", "ts", "features"}
_PLAIN_SAMPLE_FIELDS = {"prediction", "confidence", "ts"}  # the seed's: the fast path
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
    """No `ts`, or one that is an ISO-8601 time with a zone within the bounds (checked in C,
    no message built); False sends the record to the checks that name what is wrong."""
    if value is _NO_TS:
        return True
    if type(value) is not str:
        return False
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            return False
        return TS_MIN_EPOCH_S <= moment.timestamp() <= time.time() + TS_FUTURE_S
    except (ValueError, OverflowError):
        return False


def check_ts(value: Any, where: str) -> None:
    """A caller-supplied `ts`: an ISO-8601 time with a zone, in UTC between 1970-01-01 and
    now + 24 h (what both stores can hold and order: a year-9999 time at -14:00 is past
    9999 in UTC)."""
    try:
        moment = parse_ts(value)
    except (ValueError, TypeError):
        raise ValidationError(
            f"{where}ts must be an ISO-8601 time with a zone, not {_shown(value)}"
        ) from None
    try:
        seconds = moment.timestamp()
    except (OverflowError, ValueError):
        seconds = math.inf if moment.year > 1970 else -math.inf
    if not TS_MIN_EPOCH_S <= seconds <= time.time() + TS_FUTURE_S:
        raise ValidationError(
            f"{where}ts must lie between 1970-01-01T00:00:00Z and 24 hours from now (UTC), "
            f"not {_shown(value)}"
        )


def _shown(value: Any) -> str:
    """A value for an error message, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text):,} characters)"


def check_user_id(value: Any, where: str) -> None:
    """A request's `user_id`: a string of at most USER_ID_MAX_BYTES (UTF-8) without a NUL
    character, or a whole number that fits 64 bits."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationError(f"{where}user_id must be a string, not {_shown(value)}")
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise ValidationError(f"{where}user_id must fit 64 bits as a number; send a string")
        return
    check_text(f"{where}user_id", value, USER_ID_MAX_BYTES)


def _fast_user_id(value: Any) -> bool:
    """No user_id, or a short string without NUL (64 characters are at most 256 bytes), or
    an int that fits 64 bits; False sends the record to check_user_id."""
    if type(value) is str:
        return len(value) <= USER_ID_MAX_BYTES // 4 and "\x00" not in value
    return (type(value) is int and -(2**63) <= value < 2**64)


_MS_HIGH = INFERENCE_TIME_MS.high


def plain_request(
    variant: Any, inference_time_ms: Any, confidence: Any, error: Any, user_id: Any = ""
) -> bool:
    """Whether a request's fields pass as they are (the common case, checked without building
    any message; `user_id` "" when there is none). False sends the record to
    validate_request, which takes numpy scalars and names what is wrong."""
    t, c = inference_time_ms, confidence
    return (
        variant in VARIANTS
        and type(t) in NUMBER
        and 0 <= t <= _MS_HIGH
        and type(c) in NUMBER
        and 0 <= c <= 1
        and type(error) is bool
        and _fast_user_id(user_id)
    )


def plain_sample(prediction: Any, confidence: Any) -> bool:
    """Whether a sample's fields pass as they are (as plain_request, for validate_sample)."""
    p, c = prediction, confidence
    return (
        type(p) in NUMBER
        and -PREDICTION_ABS_MAX <= p <= PREDICTION_ABS_MAX
        and type(c) in NUMBER
        and 0 <= c <= 1
    )


def validate_request(doc: Any, where: str = "", *, judge_ts: bool = True) -> dict[str, Any]:
    """A recorded request with its fields checked; `where` prefixes messages (batch line).
    `judge_ts=False`: the `ts` is the tool's own stamp from the project's clock (which a
    simulation or a test may set anywhere) or one already stored, and is not judged."""
    ts = doc.get("ts", _NO_TS) if judge_ts and type(doc) is dict else _NO_TS
    if (
        type(doc) is dict
        and doc.keys() <= REQUEST_FIELDS
        and _fast_ts(ts)
        and _fast_step(doc.get("step", 1))
        and plain_request(
            doc.get("variant"),
            doc.get("inference_time_ms"),
            doc.get("confidence"),
            doc.get("error", False),
            doc.get("user_id", ""),
        )
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
    if "user_id" in doc:
        check_user_id(doc["user_id"], where)
    if "ts" in doc and judge_ts:
        check_ts(doc["ts"], where)
    if "step" in doc and not _fast_step(doc["step"]):
        raise ValidationError(
            f"{where}step must be a ramp step from 1 to {MAX_RAMP_STEP}, not {_shown(doc['step'])}",
            field=f"{where}step",
        )
    return doc


def _fast_step(value: Any) -> bool:
    """A request's ramp step: an int from 1 to MAX_RAMP_STEP."""
    return type(value) is int and 1 <= value <= MAX_RAMP_STEP


def validate_sample(doc: Any, where: str = "", *, judge_ts: bool = True) -> dict[str, Any]:
    """A sample {prediction, confidence[, ts][, features]}: both finite, confidence in [0, 1],
    features as `features.validate_features` (`judge_ts` as for validate_request)."""
    ts = doc.get("ts", _NO_TS) if judge_ts and type(doc) is dict else _NO_TS
    if (
        type(doc) is dict
        and doc.keys() <= _PLAIN_SAMPLE_FIELDS
        and _fast_ts(ts)
        and plain_sample(doc.get("prediction"), doc.get("confidence"))
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
    if "ts" in doc and judge_ts:
        check_ts(doc["ts"], where)
    if "features" in doc:
        from .features import validate_features

        doc["features"] = validate_features(doc["features"], where)
    return doc
