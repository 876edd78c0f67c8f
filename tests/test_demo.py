"""The demo's end state, checked through the library."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlops_cli import Project

from . import pg_server as fixtures
from .conftest import MLOPS_BIN

pg_server = fixtures.pg_server  # the session's server
pg_url = fixtures.pg_url  # a new database on it


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
    # the day's line names the alarms behind the alert
    fired = [k for k, v in report["alarms"].items() if v["alarm"]]
    assert fired and f"({', '.join(fired)} alarm" in run.stdout


def test_demo_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    run = subprocess.run([str(MLOPS_BIN), "demo", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith("error: ") and "not empty" in run.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def days(output: str) -> list[str]:
    """The day-by-day lines and the summary's decisions."""
    keep = ("  day ", "│ A/B decision", "│ drift", "│ champion")
    return [line for line in output.splitlines() if line.startswith(keep)]


@pytest.mark.postgres
def test_demo_runs_on_a_postgresql_url_as_on_a_directory(pg_url: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [str(MLOPS_BIN), "demo", pg_url], capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr
    project = Project.open(pg_url)
    try:
        assert project.registry.require_champion("gnn").version == "v2.2.0"
        test = project.ab.get_test("gnn_v2.2_test")
        assert test["status"] == "promoted"
        report = project.drift_detector("gnn", "v2.2.0").get_drift_report()
        assert report["level"] in ("retrain", "critical") and report["alert_triggered"]
    finally:
        project.store.close()
    # the same decisions as the directory demo (same seed, same data)
    directory = subprocess.run(
        [str(MLOPS_BIN), "demo", str(tmp_path / "demo")], capture_output=True, text=True, timeout=120
    )
    assert directory.returncode == 0, directory.stderr
    # the days run on the demo's simulated clock on both stores, so they print the same
    assert days(run.stdout) and days(run.stdout) == days(directory.stdout)
    assert f"mlops -C {pg_url} drift report gnn v2.2.0" in run.stdout
    files = Path(run.stdout.split("its files in ", 1)[1].split(")", 1)[0])
    assert "retrain gnn v2.2.0" in (files / "retrain-requests.log").read_text()
    assert 'model_drift_score{model_type="gnn",model_version="v2.2.0"}' in (
        files / "metrics" / "mlops.prom"
    ).read_text()


@pytest.mark.postgres
def test_demo_refuses_a_postgresql_store_that_holds_data(pg_url: str) -> None:
    project = Project.init(pg_url)
    try:
        project.registry.register_version(
            __import__("mlops_cli").ModelVersion(model_type="ocr", version="1.0.0", model_path="m")
        )
    finally:
        project.store.close()
    run = subprocess.run([str(MLOPS_BIN), "demo", pg_url], capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith("error: ") and "holds" in run.stderr
    project = Project.open(pg_url)
    try:
        assert [m for m in project.state().models] == ["ocr"]
    finally:
        project.store.close()


@pytest.mark.postgres
def test_demo_takes_an_initialised_but_empty_postgresql_store(pg_url: str) -> None:
    Project.init(pg_url).store.close()  # `mlops init URL`: a registry with no model yet
    run = subprocess.run(
        [str(MLOPS_BIN), "demo", pg_url], capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr
