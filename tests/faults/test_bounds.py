"""Issue 12 cases 2 and 3: a huge but finite value is refused where it is accepted, so no sum
of squares overflows and nothing downstream breaks."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from mlops_cli.cli import app

from ..conftest import assert_one_error_line, snapshot
from .helpers import ab_project


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
    assert_one_error_line(result, "inference_time_ms must be between 0 and 1e+07")
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
    assert_one_error_line(result, "inference_time_ms must be between 0 and 1e+07")
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
    assert_one_error_line(result, "prediction must be between -1e+12 and 1e+12")
    samples = b'{"prediction": 0.5, "confidence": 0.9}\n{"prediction": -1e13, "confidence": 0.9}\n'
    result = run(root, "drift", "reference", "gnn", "1.0.0", "--file", "-", input=samples)
    assert result.exit_code == 1 and "line 2" in result.stderr
    assert snapshot(root) == before
    fine = run(
        root, "drift", "record", "gnn", "1.0.0", "--prediction", "-1e12", "--confidence", "0.5"
    )
    assert fine.exit_code == 0
