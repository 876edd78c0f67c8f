"""The upgrade to one file per model type (schema 5) survives a kill at every step.

An older project (the whole registry in registry.yaml) is upgraded in place when it is first
opened, under the project lock: each model type's file is written, then the archive and the
events, then registry.yaml is replaced (the commit point). A process killed (os._exit, as
SIGKILL: no cleanup) before or after any of those writes leaves the old registry.yaml or the
new one; the next command finishes the upgrade (or finds it done) with every value kept.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops_cli import ABTestConfig, ModelVersion, Project
from mlops_cli.schema import SCHEMA_VERSION

V1 = Path(__file__).parent / "data" / "registry-v1.yaml"

# Counts the writes of the upgrade (file replaces, log appends) and dies (exit 9, no cleanup)
# before or after the Nth; with N = 0 it prints how many there were.
KILLER = """
import os, sys
from mlops_cli import Project, jsonl, safefs

root, kill_at, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
count = 0

def hooked(write):
    def step(*args, **kwargs):
        global count
        count += 1
        if count == kill_at and when == "before":
            os._exit(9)
        out = write(*args, **kwargs)
        if count == kill_at and when == "after":
            os._exit(9)
        return out
    return step

safefs.atomic_replace = hooked(safefs.atomic_replace)
jsonl.write_locked = hooked(jsonl.write_locked)
Project.open(root)
print(count)
"""


def v4_project(root: Path) -> Path:
    """Three model types, a finished (archived) test and a running one, as schema 4 kept it."""
    project = Project.init(root)
    for name in ("a", "b", "c"):
        for v in ("1.0.0", "1.1.0"):
            project.registry.register_version(ModelVersion(name, v, model_path="/m"))
    project.ab.start_test(ABTestConfig("done", "a", treatment_version="1.1.0"))
    project.ab.finalize_test("done", "rollback")
    project.ab.start_test(ABTestConfig("running", "b", treatment_version="1.1.0"))
    doc = project.store.read().to_doc()
    project.close()
    doc["schema_version"] = 4
    (root / "registry.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.rmtree(root / "models")
    return root


def v1_project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "registry.yaml").write_bytes(V1.read_bytes())
    return root


def upgrade(root: Path, kill_at: int = 0, when: str = "before") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", KILLER, str(root), str(kill_at), when],
        capture_output=True,
        text=True,
        timeout=120,
    )


def outcome(root: Path) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The registry (without the commit marks) and the archived tests, as a reader sees them."""
    project = Project.open(root)
    doc = project.store.read().to_doc()
    del doc["committed"]
    archived = sorted((t.to_dict() for t in project.store.archived_tests()), key=str)
    project.close()
    return doc, archived


@pytest.mark.parametrize("make", [v4_project, v1_project], ids=["schema4", "schema1"])
def test_an_upgrade_killed_at_any_step_is_finished_by_the_next_command(
    tmp_path: Path, make: object
) -> None:
    assert callable(make)
    template = make(tmp_path / "template")
    old = (template / "registry.yaml").read_bytes()
    reference = Path(shutil.copytree(template, tmp_path / "reference"))
    done = upgrade(reference)
    assert done.returncode == 0, done.stderr
    steps = int(done.stdout)
    assert steps >= 2  # at least a model type's file and registry.yaml
    expected = outcome(reference)
    assert yaml.safe_load((reference / "registry.yaml").read_text())["schema_version"] == (
        SCHEMA_VERSION
    )
    for kill_at in range(1, steps + 1):
        for when in ("before", "after"):
            root = Path(shutil.copytree(template, tmp_path / f"k{kill_at}{when}"))
            killed = upgrade(root, kill_at, when)
            assert killed.returncode == 9, (kill_at, when, killed.stderr)
            left = (root / "registry.yaml").read_bytes()
            upgraded = yaml.safe_load(left)["schema_version"] == SCHEMA_VERSION
            assert left == old or upgraded, (kill_at, when)  # never a half state
            # the last write is registry.yaml's replace: only a kill after it left it done
            assert upgraded == (kill_at == steps and when == "after"), (kill_at, when)
            assert outcome(root) == expected, (kill_at, when)
            again = (root / "registry.yaml").read_bytes()
            assert yaml.safe_load(again)["schema_version"] == SCHEMA_VERSION
