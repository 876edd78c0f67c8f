"""Numeric bounds on everything the tool accepts, so every sum, square and statistic is finite.

Why these numbers: a prediction of at most 1e12 in absolute value squares to 1e24, and ten
million of them sum to 1e31, far below the float maximum (1.8e308); an inference time of at
most 1e7 ms (about 2.8 hours) squares to 1e14, finite for any count of requests. Sizes and
windows lie in 2..10,000,000 so a window's arrays (16 bytes a sample) stay under about 160 MB.
A computed statistic that still comes out non-finite is refused by `require_finite`, naming
the data, before it is recorded, exported or decided on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from .errors import StateError, ValidationError


class Bound(NamedTuple):  # (a NamedTuple: a quarter of a frozen dataclass's import cost)
    """A closed range (open at an end when `low_open`/`high_open`), whole numbers if `integer`."""

    low: float
    high: float
    low_open: bool = False
    integer: bool = False
    high_open: bool = False
    unit: str = ""

    def check(self, name: str, value: Any) -> Any:
        """`value` if it is a finite number within the bound, else a ValidationError."""
        return check_bounded(
            name,
            value,
            self.low,
            self.high,
            low_open=self.low_open,
            integer=self.integer,
            high_open=self.high_open,
        )

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return _interval(self.low, self.high, self.low_open, self.high_open) + unit


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    return f"{'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"


def _num(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:g}"


# Per-sample values (A/B requests, metrics updates, drift samples).
INFERENCE_TIME_MS = Bound(0, 1e7, unit="ms")
CONFIDENCE = Bound(0, 1)
PREDICTION_ABS_MAX = 1e12
PREDICTION = Bound(-PREDICTION_ABS_MAX, PREDICTION_ABS_MAX)

# Sizes, windows and counts.
SIZE_MAX = 10_000_000
SIZE = Bound(1, SIZE_MAX, integer=True)
"""drift.reference_size, drift.window_size, drift.min_samples, `drift check --window`."""
MIN_REQUESTS = Bound(0, 1e12, integer=True)
SEQUENTIAL_TUNING = Bound(1, 1e9, integer=True)
HISTORY_LIMIT = Bound(1, SIZE_MAX, integer=True)
"""--limit of `mlops history`."""

# A/B configuration.
TRAFFIC_PCT = Bound(0, 100, low_open=True, unit="%")
DURATION_DAYS = Bound(0, 3650, unit="days")

# Settings and YAML.
SETTINGS_DEPTH_MAX = 32
YAML_DEPTH_MAX = 64
"""Deepest nesting of mappings and sequences in YAML the tool reads."""
YAML_ALIAS_BUDGET = 10_000
"""Nodes that YAML aliases may add when expanded (beyond the nodes written in the file)."""
LOCK_TIMEOUT_S = Bound(0, 86_400, unit="s")
HOOK_TIMEOUT_S = Bound(0, 86_400, low_open=True, unit="s")
HOOK_COOLDOWN_S = Bound(0, 10 * 365 * 86_400, unit="s")
DRIFT_SCALE = Bound(0, 1e6, low_open=True)
"""drift.performance_scale and drift.distribution_scale."""

# Text, lines and times.
TEXT_MAX_BYTES = 4096
"""A reason (--reason, an audit event's) or a version's description, in UTF-8 bytes."""
USER_ID_MAX_BYTES = 256
"""A request's `user_id`, in UTF-8 bytes."""
LINE_MAX_BYTES = 1 << 20
"""One line of a batch (file or stdin) or of a log: a longer one is a bad line, read past in
bounded memory and never held."""
TS_MIN_EPOCH_S = 0.0
TS_FUTURE_S = 86_400.0
"""A record's `ts` lies between 1970-01-01T00:00:00Z and now + 24 h (clocks disagree; a year
9999 time with a -14:00 offset overflows once converted to UTC)."""

FIELD_BOUNDS: dict[str, Bound] = {
    "inference_time_ms": INFERENCE_TIME_MS,
    "confidence": CONFIDENCE,
    "prediction": PREDICTION,
    "drift.reference_size": SIZE,
    "drift.window_size": SIZE,
    "drift.min_samples": SIZE,
    "window": SIZE,
    "min_requests": MIN_REQUESTS,
    "sequential_tuning": SEQUENTIAL_TUNING,
    "treatment_traffic_pct": TRAFFIC_PCT,
    "duration_days": DURATION_DAYS,
    "lock_timeout_s": LOCK_TIMEOUT_S,
    "drift.hook_timeout_s": HOOK_TIMEOUT_S,
    "drift.hook_cooldown_s": HOOK_COOLDOWN_S,
    "drift.performance_scale": DRIFT_SCALE,
    "drift.distribution_scale": DRIFT_SCALE,
}
"""The bound of each field and setting by name (settings by dotted key)."""


def check_bounded(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    integer: bool = False,
    high_open: bool = False,
) -> Any:
    """Return `value` when it is a finite number in [low, high] (an end open if asked).

    Booleans, strings, NaN and infinities are refused; with `integer`, so are non-integers.
    The error names the field and the bound: "inference_time_ms must be in [0, 10,000,000],
    not 1e+200".
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{name} must be a number, not {value!r}")
    if integer and not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValidationError(f"{name} must be a whole number, not {value!r}")
    if not math.isfinite(value):
        raise ValidationError(f"{name} must be a finite number, not {value!r}")
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        bound = _interval(low, high, low_open, high_open)
        raise ValidationError(f"{name} must be in {bound}, not {value!r}")
    return value


def check_size(name: str, value: Any) -> int:
    """A size, window or count in 2..10,000,000 (a window of one sample has no spread)."""
    result: int = SIZE.check(name, value)
    return result


def check_text(name: str, value: str, max_bytes: int = TEXT_MAX_BYTES) -> str:
    """Text kept in the registry, a log or PostgreSQL: at most `max_bytes` in UTF-8 and no NUL
    character (PostgreSQL text cannot hold one)."""
    if len(value) * 4 > max_bytes:  # (a character is at most 4 bytes: most texts stop here)
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise ValidationError(f"{name} is longer than {max_bytes:,} bytes ({size:,})")
    if "\x00" in value:
        raise ValidationError(f"{name} holds a NUL character (\\u0000), which cannot be stored")
    return value


def nesting_depth(value: Any) -> int:
    """How deeply dicts and lists nest in `value` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: Iterable[Any] = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_depth(name: str, value: Any, max_depth: int = SETTINGS_DEPTH_MAX) -> Any:
    """Refuse dicts/lists nested deeper than `max_depth` (settings: 32)."""
    depth = nesting_depth(value)
    if depth > max_depth:
        raise ValidationError(f"{name} nests {depth} levels deep; at most {max_depth} allowed")
    return value


def require_finite(name: str, value: Any, what_data: str) -> float:
    """A computed statistic, refused when it is not a finite number.

    `what_data` names the data it was computed from ("the drift window of g 1.0.0"), so the
    error says where to look; the value is never recorded, exported or decided on.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise StateError(
            f"{name} computed from {what_data} is not a finite number ({value!r}); it is not "
            "recorded, exported or used for a decision: look for extreme or corrupt values there"
        )
    return number


def require_all_finite(values: Mapping[str, Any], what_data: str) -> None:
    """`require_finite` on every numeric value of a flat mapping (None is skipped)."""
    for name, value in values.items():
        if value is not None and not isinstance(value, (str, bool)):
            require_finite(name, value, what_data)


def markdown() -> str:
    """The limits as a docs section (appended to docs/cli.md by the docs generator)."""
    rows = [
        ("`inference_time_ms`", INFERENCE_TIME_MS.describe() + " (about 2.8 hours)"),
        ("`confidence`", CONFIDENCE.describe()),
        ("`prediction`", f"absolute value at most {_num(PREDICTION_ABS_MAX)}"),
        (
            "`drift.reference_size`, `drift.window_size`, `drift.min_samples`, `--window`",
            SIZE.describe(),
        ),
        ("`min_requests`", MIN_REQUESTS.describe()),
        ("`treatment_traffic_pct`", TRAFFIC_PCT.describe()),
        ("`duration_days`", DURATION_DAYS.describe()),
        ("`lock_timeout_s`", LOCK_TIMEOUT_S.describe()),
        ("`drift.hook_timeout_s`", HOOK_TIMEOUT_S.describe()),
        ("`drift.performance_scale`, `drift.distribution_scale`", DRIFT_SCALE.describe()),
        ("settings nesting depth", f"at most {SETTINGS_DEPTH_MAX} levels"),
        ("model type, A/B test name", "1-64 characters from `A-Z a-z 0-9 . _ -`"),
        ("`user_id`", f"at most {USER_ID_MAX_BYTES} bytes (UTF-8), no NUL character"),
        (
            "a reason (`--reason`), a description, tag values, `model_path`",
            f"at most {TEXT_MAX_BYTES:,} bytes (UTF-8), no NUL character",
        ),
        (
            "a line of a batch (`--file`) or of a log",
            f"at most {LINE_MAX_BYTES:,} bytes (1 MiB); a longer one is a bad line",
        ),
        ("`ts` of a record", "UTC between 1970-01-01T00:00:00Z and now + 24 h"),
    ]
    lines = [
        "## Limits",
        "",
        "Every number the tool accepts is finite and bounded, so no sum, square or statistic",
        "can overflow; a value outside its bound is refused (exit 1) before anything is",
        "written. A computed statistic that is still not finite is an error naming the data,",
        "never recorded, exported or decided on. YAML (`--config-file`, `registry.yaml`) may",
        f"not nest deeper than {YAML_DEPTH_MAX} levels, expand aliases past "
        f"{YAML_ALIAS_BUDGET:,} nodes, or repeat a key.",
        "",
        "| value | accepted |",
        "| --- | --- |",
    ]
    lines += [f"| {what} | {bound} |" for what, bound in rows]
    return "\n".join(lines) + "\n"
