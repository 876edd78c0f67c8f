"""Bounds of the shared record validation both stores call: user_id, ts, NUL characters."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from mlops_cli import records, schema
from mlops_cli.errors import ValidationError
from mlops_cli.records import validate_request, validate_sample

NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=timezone.utc).timestamp()


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """The upper ts bound is now + 24 h: "now" is pinned, so no test depends on the clock."""
    monkeypatch.setattr(records, "time", SimpleNamespace(time=lambda: NOW), raising=False)


def request(**extra: object) -> dict[str, object]:
    return {"variant": "control", "inference_time_ms": 5.0, "confidence": 0.9, **extra}


@pytest.mark.parametrize(
    "user_id",
    ["u" * 256, "é" * 128, "€" * 85 + "a", "", 2**63 - 1, -(2**63), 2**64 - 1],
    ids=["256 ascii", "128 x 2 bytes", "85 x 3 bytes + 1", "empty", "int max", "int min", "u64"],
)
def test_a_user_id_up_to_256_bytes_is_accepted(user_id: object) -> None:
    assert validate_request(request(user_id=user_id))["user_id"] == user_id


@pytest.mark.parametrize(
    ("user_id", "message"),
    [
        ("u" * 257, r"user_id is longer than 256 bytes \(257\)"),
        ("€" * 86, r"user_id is longer than 256 bytes \(258\)"),  # 86 characters, 258 bytes
        ("a\x00b", r"user_id holds a NUL character \(\\u0000\)"),
        (2**64, "user_id must fit 64 bits"),
        (True, "user_id must be a string"),
        (None, "user_id must be a string"),
    ],
    ids=["257 ascii", "86 x 3 bytes", "nul", "2**64", "bool", "null"],
)
def test_a_user_id_past_the_bound_or_with_nul_is_refused(user_id: object, message: str) -> None:
    with pytest.raises(ValidationError, match="^line 3: " + message):
        validate_request(request(user_id=user_id), "line 3: ")


@pytest.mark.parametrize(
    "ts",
    [
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:00:00-00:01",  # 00:01 UTC
        "2026-12-06T12:00:00Z",  # now + 24 h exactly
        "2026-12-06T13:00:00+01:00",  # the same instant
    ],
)
def test_a_ts_from_1970_to_a_day_ahead_is_accepted(ts: str) -> None:
    assert validate_request(request(ts=ts))["ts"] == ts
    assert validate_sample({"prediction": 1.0, "confidence": 0.5, "ts": ts})["ts"] == ts


@pytest.mark.parametrize(
    "ts",
    [
        "1969-12-31T23:59:59.999999Z",
        "1970-01-01T00:00:00+00:01",  # 1969-12-31T23:59 UTC
        "2026-12-06T12:00:00.000001Z",  # a microsecond past now + 24 h
        "9999-12-31T23:59:59-14:00",  # past year 9999 once in UTC
        "0001-01-01T00:00:00+14:00",  # before year 1 once in UTC
        "9999-12-31T23:59:59Z",
    ],
)
def test_a_ts_outside_the_bounds_is_refused_cleanly(ts: str) -> None:
    message = "^line 2: ts must lie between 1970-01-01T00:00:00Z and 24 hours from now"
    with pytest.raises(ValidationError, match=message):
        validate_request(request(ts=ts), "line 2: ")
    with pytest.raises(ValidationError, match=message):
        validate_sample({"prediction": 1.0, "confidence": 0.5, "ts": ts}, "line 2: ")


def test_registry_text_is_bounded_and_holds_no_nul() -> None:
    check = schema.text()
    assert check("d" * 4096, "description") == "d" * 4096
    with pytest.raises(ValueError, match="description is longer than 4,096 bytes"):
        check("d" * 4097, "description")
    with pytest.raises(ValueError, match="model_path holds a NUL character"):
        schema.text()("/m\x00", "model_path")
    with pytest.raises(ValueError, match=r"config\.a\[1\] holds a NUL character"):
        schema.config_mapping({"a": [1, "x\x00"]}, "config")
    with pytest.raises(ValueError, match="config holds a NUL character"):
        schema.config_mapping({"k\x00": 1}, "config")
    assert schema.config_mapping({"a": {"b": ["c"]}}, "config") == {"a": {"b": ["c"]}}


def test_the_tools_own_stamp_is_not_judged_a_callers_ts_is(tmp_path: object) -> None:
    """A project's clock may be set anywhere (simulations, tests): its stamps are recorded;
    the bound is on times a caller supplies."""
    from datetime import timedelta
    from pathlib import Path

    from mlops_cli import ABTestConfig, ModelVersion, Project

    far = datetime.fromtimestamp(NOW, timezone.utc) + timedelta(days=400)
    project = Project.init(Path(str(tmp_path)) / "p", clock=lambda: far)
    for v in ("1.0.0", "1.1.0"):
        project.registry.register_version(ModelVersion("g", v, model_path="/m"))
    project.ab.start_test(ABTestConfig("t", "g", treatment_version="1.1.0"))
    project.ab.record_result("t", "control", 5, 0.9)
    project.drift_detector("g", "1.0.0").add_production_sample(0.5, 0.9)
    with pytest.raises(ValidationError, match="ts must lie between"):
        project.ab.record_result("t", "control", 5, 0.9, ts=far.isoformat())
    with pytest.raises(ValidationError, match="ts must lie between"):
        project.drift_detector("g", "1.0.0").add_production_sample(0.5, 0.9, ts=far.isoformat())
    assert project.ab.evaluate_test("t").requests == 1
    assert validate_sample(
        {"prediction": 1.0, "confidence": 0.5, "ts": "9999-12-31T23:59:59Z"}, judge_ts=False
    )


# The per-request check (plain_request, plain_sample) lets through exactly what passes as it
# is: every value on its bound is taken, every value past it goes to the full validation.


@pytest.mark.parametrize(
    ("fields", "plain"),
    [
        (("control", 0, 0, False, ""), True),
        (("treatment", 1e7, 1.0, True, "u" * 64), True),  # the bounds themselves (limits.py)
        (("control", 10_000_000.001, 0.5, False, ""), False),
        (("control", -0.000001, 0.5, False, ""), False),
        (("control", 1.0, 1.000001, False, ""), False),
        (("control", 1.0, -0.000001, False, ""), False),
        (("control", float("nan"), 0.5, False, ""), False),
        (("control", float("inf"), 0.5, False, ""), False),
        (("control", True, 0.5, False, ""), False),  # a bool is no number here
        (("control", 1.0, 0.5, 0, ""), False),  # nor a number an error flag
        (("champion", 1.0, 0.5, False, ""), False),
        (("control", 1.0, 0.5, False, "u" * 65), False),  # longer: its bytes are counted
        (("control", 1.0, 0.5, False, "a\x00b"), False),
        (("control", 1.0, 0.5, False, 2**64 - 1), True),
        (("control", 1.0, 0.5, False, 2**64), False),
        (("control", 1.0, 0.5, False, None), False),
    ],
)
def test_the_per_request_check_of_a_request(fields: tuple[object, ...], plain: bool) -> None:
    assert records.plain_request(*fields) is plain
    if plain:
        names = ("variant", "inference_time_ms", "confidence", "error", "user_id")
        doc = dict(zip(names, fields, strict=True))
        assert validate_request(doc) == doc


@pytest.mark.parametrize(
    ("prediction", "confidence", "plain"),
    [
        (0.0, 0.0, True),
        (1e12, 1.0, True),
        (-1e12, 1, True),
        (1.000001e12, 0.5, False),
        (-1.000001e12, 0.5, False),
        (0.5, 1.000001, False),
        (0.5, -0.000001, False),
        (float("nan"), 0.5, False),
        (False, 0.5, False),
        ("0.5", 0.5, False),
    ],
)
def test_the_per_request_check_of_a_sample(
    prediction: object, confidence: object, plain: bool
) -> None:
    assert records.plain_sample(prediction, confidence) is plain
