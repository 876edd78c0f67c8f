"""The examples use only what mlops_cli exports, and the CI recipes work as written: the `mlops`
lines they run are run here, in order and twice (two scheduled runs), against a real project in
a directory and in PostgreSQL, and every file they write is one the recipe uploads."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

import mlops_cli
from mlops_cli import ABTestConfig, ModelVersion, Project

from . import pg_server as fixtures

pg_server = fixtures.pg_server  # the session's server
pg_url = fixtures.pg_url  # a new database on it

EXAMPLES = Path(__file__).parent.parent / "examples"
RECIPES = ("github-actions.yml", "gitlab-ci.yml")
TEST = "gnn_v2.2_test"


def test_service_example_imports_only_exported_names() -> None:
    tree = ast.parse((EXAMPLES / "fastapi_service.py").read_text())
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "mlops_cli"
        for alias in node.names
    ]
    assert imported
    for name in imported:
        assert hasattr(mlops_cli, name), name


# -- the recipes, read as the CI services read them --------------------------------------------


def recipe_lines(name: str) -> list[str]:
    """The shell lines the recipe runs, in order: GitHub's `run:` of each step, GitLab's
    `before_script`, `script` and `after_script` of each job."""
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    lines: list[str] = []
    if name == "github-actions.yml":
        for job in doc["jobs"].values():
            for step in job["steps"]:
                lines += str(step.get("run", "")).splitlines()
    else:
        for job in doc.values():
            if isinstance(job, dict) and "script" in job:
                for key in ("before_script", "script", "after_script"):
                    lines += [str(line) for line in job.get(key, [])]
    return [line.strip() for line in lines if line.strip()]


def mlops_lines(name: str) -> list[str]:
    return [line for line in recipe_lines(name) if line.startswith("mlops ")]


def written_files(lines: list[str]) -> set[str]:
    found: set[str] = set()
    for line in lines:
        found |= set(re.findall(r"> *([\w.-]+)", line))
        found |= set(re.findall(r"--html +([\w.-]+)", line))
    return found


def test_github_recipe_keeps_state_in_postgresql_and_uploads_always() -> None:
    text = (EXAMPLES / "github-actions.yml").read_text()
    doc = yaml.safe_load(text)
    job = doc["jobs"]["gates"]
    assert job["env"]["MLOPS_PROJECT_DIR"].startswith("${{ secrets.")
    assert "self-hosted runner" in text and "cache" in text  # a directory's limits, said
    assert any(  # mlops from its own repository at a pinned ref (see tests/test_install.py)
        line.startswith('pip install "mlops-cli[postgres] @ git+https://')
        for line in recipe_lines("github-actions.yml")
    )
    assert "actions/checkout" not in text  # the state is not in the checkout
    upload = next(s for s in job["steps"] if "upload-artifact" in str(s.get("uses")))
    report = next(s for s in job["steps"] if "report --html" in str(s.get("run")))
    assert upload["if"] == "always()" and report["if"] == "always()"
    assert written_files(mlops_lines("github-actions.yml")) == set(
        upload["with"]["path"].split()
    )


def test_gitlab_recipe_keeps_state_in_postgresql_and_uploads_always() -> None:
    text = (EXAMPLES / "gitlab-ci.yml").read_text()
    doc = yaml.safe_load(text)
    job = doc["gates"]
    assert "MLOPS_PROJECT_DIR" not in doc.get("variables", {})  # a masked CI/CD variable
    assert "MLOPS_PROJECT_DIR" in text and "masked" in text
    assert "self-hosted runner" in text and "cache" in text
    assert job["artifacts"]["when"] == "always"
    assert any("report --html" in line for line in job["after_script"])  # runs after a failure
    assert written_files(mlops_lines("gitlab-ci.yml")) == set(job["artifacts"]["paths"])


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_run_both_gates(name: str) -> None:
    lines = mlops_lines(name)
    assert any(f"mlops ab evaluate {TEST} --fail-on harm --apply" in line for line in lines)
    assert any("mlops drift check --all --fail-on critical" in line for line in lines)


# -- the recipes' commands against a real project -------------------------------------------


def harmful_test_and_critical_drift(location: str | Path, models: Path) -> None:
    """A running test whose treatment errs on 20% of requests against 2% (a rollback for harm),
    and a champion whose predictions drifted three sigmas (critical)."""
    project = Project.init(location)
    try:
        for version in ("v2.1.0", "v2.2.0"):
            path = models / f"gnn_{version}.pt"
            path.write_bytes(b"weights")
            project.registry.register_version(
                ModelVersion(model_type="gnn", version=version, model_path=str(path))
            )
        project.ab.start_test(
            ABTestConfig(
                name=TEST,
                model_type="gnn",
                control_version="v2.1.0",
                treatment_version="v2.2.0",
                treatment_traffic_pct=50,
                duration_days=7,
                min_requests=1000,
                max_error_rate_increase=0.05,
            )
        )
        rng = np.random.default_rng(11)
        lines = []
        for user in range(3000):
            variant = project.ab.assign_variant("gnn", f"u{user}")["name"]
            for _ in range(2):
                record = {
                    "variant": variant,
                    "user_id": f"u{user}",
                    "inference_time_ms": float(rng.normal(110, 10)),
                    "confidence": float(np.clip(rng.normal(0.8, 0.1), 0, 1)),
                    "error": bool(rng.random() < (0.2 if variant == "treatment" else 0.02)),
                }
                lines.append(orjson.dumps(record))
        project.ab.record_batch(TEST, b"\n".join(lines))
        detector = project.drift_detector("gnn", "v2.1.0")
        detector.set_reference(
            b"".join(
                orjson.dumps({"prediction": float(x), "confidence": 0.85}) + b"\n"
                for x in rng.normal(0, 1, 2000)
            )
        )
        detector.record_batch(
            b"".join(
                orjson.dumps({"prediction": float(x), "confidence": 0.5}) + b"\n"
                for x in rng.normal(3, 1, 1000)
            )
        )
    finally:
        project.store.close()


def run_line(line: str, location: str | Path, workdir: Path) -> int:
    """One recipe line as the runner's shell runs it; the exit code is the mlops command's
    (a trailing `|| status=$?` that keeps the job going is left off)."""
    command = line.split(" || ", 1)[0]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "MLOPS_PROJECT_DIR": str(location),
        "MLOPS_ACTOR": "ci",
    }
    env.pop("GITHUB_STEP_SUMMARY", None)
    run = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode in (0, 3), f"{command}: {run.returncode}\n{run.stdout}{run.stderr}"
    return run.returncode


def run_recipe_twice(name: str, location: str | Path, tmp_path: Path) -> None:
    lines = mlops_lines(name)
    if not str(location).startswith("postgresql://"):
        lines = [line for line in lines if not line.startswith("mlops db ")]  # a URL's step
    expected_files = written_files(lines)
    for run_number in (1, 2):  # two scheduled runs, each on an empty checkout
        workdir = tmp_path / f"run{run_number}"
        workdir.mkdir()
        codes = {line: run_line(line, location, workdir) for line in lines}
        ab = next(line for line in lines if line.startswith("mlops ab evaluate"))
        drift = next(line for line in lines if line.startswith("mlops drift check"))
        decision: dict[str, Any] = json.loads((workdir / "ab-decision.json").read_text())
        assert decision["decision"] == "rollback" and decision["rollback_cause"] == "harm"
        if run_number == 1:
            assert codes[ab] == 3 and decision["applied"] is True  # the gate trips, and applies
        else:
            assert codes[ab] == 0 and decision["status"] != "running"  # finalized: no trip
        checks = json.loads((workdir / "drift.json").read_text())["results"]
        assert codes[drift] == 3 and [c["level"] for c in checks] == ["critical"]
        html = (workdir / "mlops-report.html").read_text()
        assert html.lstrip().lower().startswith("<!doctype html") and TEST in html
        assert {p.name for p in workdir.iterdir()} == expected_files
    project = Project.open(location)
    try:
        assert project.registry.require_champion("gnn").version == "v2.1.0"
        assert project.ab.get_test(TEST)["status"] == "rolled_back"
    finally:
        project.store.close()


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_commands_on_a_directory_project(name: str, tmp_path: Path) -> None:
    harmful_test_and_critical_drift(tmp_path / "project", tmp_path)
    run_recipe_twice(name, tmp_path / "project", tmp_path)


@pytest.mark.postgres
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_commands_on_a_postgresql_project(name: str, pg_url: str, tmp_path: Path) -> None:
    harmful_test_and_critical_drift(pg_url, tmp_path)
    run_recipe_twice(name, pg_url, tmp_path)
