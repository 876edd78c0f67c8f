"""Times in registry.yaml and the model type files are checked when they load."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_cli import ModelVersion, Project
from mlops_cli.errors import StateError

from .helpers import ab_project


@pytest.mark.parametrize("value", ["yesterday", "2026-01-31T12:00:00", "12"])
def test_a_bad_started_at_is_a_state_error_naming_file_and_key(
    tmp_path: Path, value: str
) -> None:
    project = ab_project(tmp_path / "p")
    path = project.registry_path
    text = path.read_text()
    started = project.ab.get_test("t").started_at
    path.write_text(text.replace(f"started_at: '{started}'", f"started_at: '{value}'"))
    assert path.read_text() != text
    with pytest.raises(StateError, match=r"registry\.yaml: ab_tests\.t\.started_at must be"):
        Project.open(project.root)


def test_a_registered_at_without_a_zone_is_a_state_error(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "p")
    project.registry.register_version(ModelVersion("gnn", "1.0.0", model_path="/m"))
    (path,) = (project.root / "models" / "gnn").glob("*.jsonl")  # the type's file
    stamp = project.registry.get_version("gnn", "1.0.0").registered_at
    assert stamp is not None
    path.write_text(path.read_text().replace(stamp, "2026-01-31 12:00:00"))
    project.close()  # (a file of one generation is read once per process)
    with pytest.raises(StateError, match=r"models\.gnn\.versions\.1\.0\.0\.registered_at"):
        Project.open(project.root).registry.get_version("gnn", "1.0.0")
