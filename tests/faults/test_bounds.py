"""Issue 12 cases 2 and 3: a huge but finite value is refused where it is accepted, so no sum
of squares overflows and nothing downstream breaks."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlops_cli.cli import app

from ..conftest import assert_one_error_line, snapshot
from .helpers import ab_project, requests_jsonl


class _Run:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr


def run(root: Path, *args: str, input: bytes | None = None) -> _Run:
    result = CliRunner().invoke(app, ["-C", str(root), *args], input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return _Run(result.exit_code, result.stdout, result.stderr)


def test_huge_inference_time_is_refused_and_nothing_breaks(tmp_path: Path) -> None:
    root = tmp_path / "p"
    ab_project(root)
    before = snapshot(root)
    result = run(
        root,
        "metrics",
        "update",
        "gnn",
        "1.0.0",
        "--inference-time-ms",
        "1e200",
        "--confidence",
        "0.5",
    )
    assert_one_error_line(result, "--inference-time-ms must be between 0 and 1e+07")
    result = run(
        root,
        "ab",
        "record",
        "t",
        "--variant",
        "control",
        "--inference-time-ms",
        "1e200",
        "--confidence",
        "0.5",
    )
    assert_one_error_line(result, "--inference-time-ms must be between 0 and 1e+07")
    batch = b'{"variant": "control", "inference_time_ms": 5, "confidence": 0.5}\n' * 3
    batch += b'{"variant": "treatment", "inference_time_ms": 1e200, "confidence": 0.5}\n'
    result = run(root, "ab", "record", "t", "--file", "-", input=batch)
    assert result.exit_code == 1 and "line 4" in result.stderr
    assert snapshot(root) == before
    for args in (["champion", "gnn"], ["list"], ["metrics", "export"], ["ab", "evaluate", "t"]):
        assert run(root, *args).exit_code == 0, args
    ok = run(
        root,
        "metrics",
        "update",
        "gnn",
        "1.0.0",
        "--inference-time-ms",
        "1e7",
        "--confidence",
        "0.5",
    )
    assert ok.exit_code == 0


def test_huge_prediction_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "p"
    ab_project(root)
    before = snapshot(root)
    result = run(
        root, "drift", "record", "gnn", "1.0.0", "--prediction", "1e308", "--confidence", "0.5"
    )
    assert_one_error_line(result, "--prediction must be between -1e+12 and 1e+12")
    samples = b'{"prediction": 0.5, "confidence": 0.9}\n{"prediction": -1e13, "confidence": 0.9}\n'
    result = run(root, "drift", "reference", "gnn", "1.0.0", "--file", "-", input=samples)
    assert result.exit_code == 1 and "line 2" in result.stderr
    assert snapshot(root) == before
    fine = run(
        root, "drift", "record", "gnn", "1.0.0", "--prediction", "-1e12", "--confidence", "0.5"
    )
    assert fine.exit_code == 0


def test_non_finite_drift_score_is_never_recorded_or_hooked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12 case 3: a NaN score was appended as level ok and poisoned avg_drift_7d."""
    import numpy as np

    from mlops_cli import drift
    from mlops_cli.errors import StateError
    from tests.test_drift import jsonl_of, samples

    root = tmp_path / "p"
    project = ab_project(root)
    d = project.drift_detector("gnn", "1.0.0")
    rng = np.random.default_rng(5)
    d.set_reference(jsonl_of(*samples(rng, 200)))
    d.record_batch(jsonl_of(*samples(rng, 200, mean=3.0)))
    marker = tmp_path / "hook-ran"
    project.set_setting("drift.hooks.monitor", f"touch {marker}")
    monkeypatch.setattr(drift, "combine", lambda parts, weights: float("nan"))
    with pytest.raises(
        StateError,
        match=r"^score computed from the reference and window of gnn 1\.0\.0 is not a finite",
    ):
        d.check()
    assert not project.drift_log("gnn", "1.0.0", "checks").exists() and not marker.exists()
    monkeypatch.undo()
    assert run(root, "drift", "report", "gnn", "1.0.0").exit_code == 0


def test_window_upper_bound(tmp_path: Path) -> None:
    root = tmp_path / "p"
    ab_project(root)
    result = run(root, "drift", "check", "gnn", "1.0.0", "--window", "1000000000000")
    assert_one_error_line(result, "--window must be between 1 and 10,000,000")


def test_poisoned_summary_cache_is_recomputed(tmp_path: Path) -> None:
    """Issue 12 case 2: a cache holding null sums broke every later command with a TypeError."""
    import json

    root = tmp_path / "p"
    project = ab_project(root)
    project.ab.record_batch("t", requests_jsonl(60, seed=8))
    expected = project.ab.evaluate_test("t").to_dict()["metrics"]
    cache = root / "logs" / "ab" / ".t.jsonl.summary.json"
    doc = json.loads(cache.read_text())
    for arm in doc["arms"].values():
        arm["time_sum_squares"] = None
    cache.write_text(json.dumps(doc))
    assert project.ab.evaluate_test("t").to_dict()["metrics"] == expected
    assert run(root, "ab", "evaluate", "t").exit_code == 0


def test_overflowing_log_from_before_the_bounds_is_an_error_naming_the_data(
    tmp_path: Path,
) -> None:
    root = tmp_path / "p"
    project = ab_project(root)
    project.ab.record_batch("t", requests_jsonl(60, seed=8))
    log = root / "logs" / "ab" / "t.jsonl"
    with log.open("ab") as f:  # as main accepted it
        f.write(b'{"variant":"control","inference_time_ms":1e200,"confidence":0.5}\n')
    result = run(root, "ab", "evaluate", "t", "--json")
    assert result.exit_code == 1
    # the line beyond the bounds the writers check now (1e7 ms) is named, as a hand edit is
    assert "line 61 is not a valid record" in result.stdout and "out of bounds" in result.stdout
    skipped = run(root, "ab", "evaluate", "t", "--json", "--skip-invalid")
    assert skipped.exit_code == 0, skipped.stdout
