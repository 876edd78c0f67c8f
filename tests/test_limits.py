"""limits: bounds keep sums of squares finite; non-finite statistics are refused by name."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mlops_cli import limits
from mlops_cli.errors import StateError, ValidationError


def test_bounds_keep_sums_of_squares_finite_at_the_largest_sizes() -> None:
    """The reasoning of the module docstring, checked in floating point."""
    n = limits.SIZE_MAX
    worst_prediction = np.full(1000, limits.PREDICTION_ABS_MAX)
    # n values at the bound: sum of squares = n * 1e24, computed by blocks as a summary does.
    total = float(np.sum(worst_prediction**2)) * (n / 1000)
    assert math.isfinite(total) and total < 1e32
    worst_time = limits.INFERENCE_TIME_MS.high
    assert math.isfinite(worst_time**2 * 1e15)  # even 10^15 requests at the bound
    with np.errstate(over="ignore"):
        assert math.isinf(float(np.float64(1e200) ** 2))  # the value overflows alone


@pytest.mark.parametrize(
    ("bound", "name", "value"),
    [
        (limits.INFERENCE_TIME_MS, "inference_time_ms", 1e200),
        (limits.INFERENCE_TIME_MS, "inference_time_ms", -1),
        (limits.CONFIDENCE, "confidence", 1.0000001),
        (limits.PREDICTION, "prediction", 1e308),
        (limits.PREDICTION, "prediction", -1.1e12),
        (limits.SIZE, "drift.reference_size", 100_000_000_000),
        (limits.SIZE, "--window", 0),
        (limits.SIZE, "--window", 1_000_000_000_000),
        (limits.TRAFFIC_PCT, "treatment_traffic_pct", 0),
    ],
)
def test_values_outside_their_bound_are_refused(
    bound: limits.Bound, name: str, value: float
) -> None:
    with pytest.raises(ValidationError, match=f"^{name} must be in "):
        bound.check(name, value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "1", None])
def test_non_numbers_and_non_finite_are_refused(value: object) -> None:
    with pytest.raises(ValidationError, match=r"^confidence must be a"):
        limits.CONFIDENCE.check("confidence", value)


def test_values_at_the_bounds_pass() -> None:
    assert limits.INFERENCE_TIME_MS.check("t", 1e7) == 1e7
    assert limits.PREDICTION.check("p", -1e12) == -1e12
    assert limits.check_size("w", 10_000_000) == 10_000_000
    assert limits.check_size("w", 2.0) == 2 and isinstance(limits.check_size("w", 2.0), int)
    with pytest.raises(ValidationError, match="whole number"):
        limits.check_size("w", 1.5)


def test_message_names_field_and_bound() -> None:
    with pytest.raises(ValidationError) as info:
        limits.check_bounded("inference_time_ms", 1e200, 0, 1e7)
    assert str(info.value) == "inference_time_ms must be in [0, 10,000,000], not 1e+200"


def test_require_finite_names_the_data() -> None:
    assert limits.require_finite("score", np.float64(0.25), "g 1.0.0") == 0.25
    for bad in (math.nan, math.inf, np.float64("nan"), None, "x"):
        with pytest.raises(
            StateError, match=r"^score computed from the drift window of g 1\.0\.0 is not a finite"
        ):
            limits.require_finite("score", bad, "the drift window of g 1.0.0")
    with pytest.raises(StateError, match=r"^ks_pvalue computed from"):
        limits.require_all_finite({"score": 0.1, "ks_pvalue": math.nan, "level": "ok"}, "d")


def test_depth_is_measured_without_recursion() -> None:
    deep: object = 1
    for _ in range(100_000):
        deep = {"k": deep}
    assert limits.nesting_depth(deep) == 100_000
    with pytest.raises(ValidationError, match=r"^settings nests 100000 levels deep; at most 32"):
        limits.check_depth("settings", deep)
    ok: object = 1
    for _ in range(32):
        ok = [ok]
    assert limits.check_depth("settings", ok) is ok
    assert limits.nesting_depth({}) == 1 and limits.nesting_depth(3) == 0


def test_text_length_bound() -> None:
    """4 KiB of UTF-8: 4,096 ASCII characters, or 1,024 of four bytes each."""
    assert limits.check_text("reason", "x" * 4096) == "x" * 4096
    assert limits.check_text("reason", "\U0001f600" * 1024) == "\U0001f600" * 1024
    with pytest.raises(ValidationError, match=r"^reason is longer than 4,096 bytes \(4,097\)"):
        limits.check_text("reason", "x" * 4097)
    with pytest.raises(ValidationError, match=r"^reason is longer than 4,096 bytes \(4,100\)"):
        limits.check_text("reason", "\U0001f600" * 1025)
    with pytest.raises(ValidationError, match=r"^reason holds a NUL character"):
        limits.check_text("reason", "ok\x00")


def test_yaml_bounds_documented_are_those_enforced() -> None:
    """Bottom modules do not import each other: the two copies are kept equal here."""
    from mlops_cli import yamlsafe

    assert limits.YAML_DEPTH_MAX == yamlsafe.MAX_DEPTH
    assert limits.YAML_ALIAS_BUDGET == yamlsafe.ALIAS_BUDGET


def test_field_bounds_and_docs_agree() -> None:
    doc = limits.markdown()
    assert doc.startswith("## Limits\n")
    assert "| `inference_time_ms` | [0, 10,000,000] ms (about 2.8 hours) |" in doc
    assert "[1, 10,000,000]" in doc and "at most 32 levels" in doc
    assert limits.FIELD_BOUNDS["drift.window_size"] is limits.SIZE


def test_settings_schema_enforces_the_documented_bounds(tmp_path: Path) -> None:
    """Issue 12 case 8: drift.reference_size 100000000000 was accepted."""
    from mlops_cli import Project

    project = Project.init(tmp_path / "p")
    for key, bad in (
        ("drift.reference_size", "100000000000"),
        ("drift.window_size", "10000001"),
        ("drift.min_samples", "0"),
        ("drift.hook_timeout_s", "1e9"),
        ("lock_timeout_s", "1e300"),
        ("drift.performance_scale", "1e7"),
        ("ab.defaults.duration_days", "1e6"),
        ("ab.defaults.min_requests", "10000000000000"),
    ):
        with pytest.raises(ValidationError, match=key.split(".")[-1]):
            project.set_setting(key, bad)
    assert project.set_setting("drift.reference_size", "10000000") == 10_000_000
