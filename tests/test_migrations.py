"""Schema upgrades: a project written by an older mlops opens, is upgraded once, atomically,
and keeps every value it held."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from mlops_cli import Project, StateError
from mlops_cli.schema import MIGRATIONS, SCHEMA_VERSION

DATA = Path(__file__).parent / "data"
V1 = DATA / "registry-v1.yaml"  # written by mlops 0.1.0 (schema 1): the demo, then `ab start t2`


@pytest.fixture
def v1_project(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    root.mkdir()
    (root / "registry.yaml").write_bytes(V1.read_bytes())
    os.chmod(root / "registry.yaml", 0o600)
    return root


def test_every_old_schema_has_an_upgrade() -> None:
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION))


def test_a_version_1_project_opens_upgraded_with_every_value_kept(v1_project: Path) -> None:
    old = yaml.safe_load(V1.read_text())
    project = Project.open(v1_project)
    new = yaml.safe_load((v1_project / "registry.yaml").read_text())
    assert new["schema_version"] == SCHEMA_VERSION
    assert stat.S_IMODE((v1_project / "registry.yaml").stat().st_mode) == 0o600
    for name, model in old["models"].items():
        assert new["models"][name]["champion"] == model["champion"]
        assert new["models"][name]["champion_history"] == model["champion_history"]
        for version, record in model["versions"].items():
            assert new["models"][name]["versions"][version] == {**record, "monitored": False}
    for key, value in old["settings"]["drift"].items():
        assert new["settings"]["drift"][key] == value
    # tests keep their settings; guardrails stay off for tests started before them
    for name, test in old["ab_tests"].items():
        now = project.ab.get_test(name)
        for key, value in test.items():
            assert getattr(now, key) == value, (name, key)
        assert (now.max_confidence_drop, now.max_latency_increase_ms) == (None, None)
    assert project.ab.get_test("t2").running
    assert project.registry.require_champion("gnn").version == "v2.2.0"


def test_the_upgrade_is_written_once(v1_project: Path) -> None:
    Project.open(v1_project)
    first = (v1_project / "registry.yaml").stat()
    Project.open(v1_project).registry.list_versions()
    again = (v1_project / "registry.yaml").stat()
    assert (first.st_ino, first.st_mtime_ns) == (again.st_ino, again.st_mtime_ns)


def test_a_newer_schema_is_refused_and_left_alone(v1_project: Path) -> None:
    path = v1_project / "registry.yaml"
    path.write_text(path.read_text().replace("schema_version: 1", "schema_version: 99"))
    before = path.read_bytes()
    with pytest.raises(StateError, match=r"unknown schema_version 99.*upgrade mlops"):
        Project.open(v1_project)
    assert path.read_bytes() == before
