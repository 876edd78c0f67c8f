"""The demo's end state, checked through the library."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mlops_cli import Project

from .conftest import MLOPS_BIN


def test_demo_leaves_a_promoted_champion_and_a_drift_alert(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    run = subprocess.run(
        [str(MLOPS_BIN), "demo", str(root)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    project = Project.open(root)
    assert project.registry.require_champion("gnn").version == "v2.2.0"
    assert project.ab.get_test("gnn_v2.2_test")["status"] == "promoted"
    report = project.drift_detector("gnn", "v2.2.0").get_drift_report()
    assert report["level"] in ("retrain", "critical") and report["alert_triggered"]
    exported = (root / "metrics" / "mlops.prom").read_text()
    assert 'model_drift_score{model_type="gnn",model_version="v2.2.0"}' in exported
    assert "retrain gnn v2.2.0" in (root / "retrain-requests.log").read_text()
    assert f"mlops -C {root} drift report gnn v2.2.0" in run.stdout


def test_demo_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    run = subprocess.run([str(MLOPS_BIN), "demo", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith("error: ") and "not empty" in run.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
