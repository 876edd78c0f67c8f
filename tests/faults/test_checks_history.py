"""Issue 12, item 11: garbage in a version's check history can be skipped with --skip-invalid,
and a check that fails on it records nothing and runs no hook."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mlops_cli import ModelVersion, Project
from tests.test_drift import jsonl_of, samples

from ..conftest import Run, assert_one_error_line


def test_a_malformed_check_row_fails_cleanly_or_is_skipped(
    tmp_path: Path, project: Project, cli: Callable[..., Run]
) -> None:
    project.registry.register_version(ModelVersion("gnn", "1.0.0", model_path="m"))
    d = project.drift_detector("gnn", "1.0.0")
    rng = np.random.default_rng(3)
    d.set_reference(jsonl_of(*samples(rng, 300)))
    d.record_batch(jsonl_of(*samples(rng, 300, mean=2.0)))
    d.check()
    marker = tmp_path / "hook-ran"
    project.set_setting("drift.hooks.monitor", f"touch {marker}")
    checks = project.drift_log("gnn", "1.0.0", "checks")
    for garbage in (b"garbage{\n", b'{"x": 1}\n'):
        marker.unlink(missing_ok=True)
        with open(checks, "ab") as f:
            f.write(garbage)
        before = checks.read_bytes()
        for command in (("drift", "check", "gnn", "1.0.0"), ("drift", "report", "gnn", "1.0.0")):
            assert_one_error_line(cli(*command), "--skip-invalid")
        assert checks.read_bytes() == before and not marker.exists()
        skipped = cli("drift", "check", "gnn", "1.0.0", "--skip-invalid", "--json")
        assert skipped.exit_code == 0 and skipped.json()["status"] == "active"
        assert len(checks.read_bytes().splitlines()) == len(before.splitlines()) + 1
        report = cli("drift", "report", "gnn", "1.0.0", "--skip-invalid", "--json")
        assert report.exit_code == 0 and report.json()["avg_drift_7d"] > 0
