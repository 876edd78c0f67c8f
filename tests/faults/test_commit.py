"""A change is reported done exactly when it happened, and its audit event exists exactly then
(issue 12 item 5): the registry write, its events and its archived tests are one unit in the
directory store, under a full disk for either file and a crash at the commit point."""

from __future__ import annotations

import errno
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mlops_cli import ABTestConfig, ModelVersion, Project, StateError
from mlops_cli.cli import app

from ..conftest import snapshot
from .helpers import whole_lines


def two_versions(root: Path) -> Project:
    project = Project.init(root)
    for v in ("1.0.0", "1.1.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="/m"))
    return project


def full_disk_for(monkeypatch: pytest.MonkeyPatch, matches: Callable[[str], bool]) -> None:
    """os.write raises ENOSPC on descriptors of the files `matches` names, only."""
    real = os.write

    def write(fd: int, data: bytes) -> int:  # type: ignore[override]
        if matches(os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def promoted(project: Project) -> list[dict[str, object]]:
    return [e for e in whole_lines(project.root / "events.jsonl") if e["event"] == "promoted"]


@pytest.mark.parametrize(
    "full",
    [
        pytest.param(lambda name: name == "events.jsonl", id="events.jsonl"),
        pytest.param(lambda name: name.startswith(".registry.yaml."), id="registry.yaml"),
    ],
)
def test_a_full_disk_for_one_file_fails_the_change_whole_and_the_retry_does_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full: Callable[[str], bool]
) -> None:
    project = two_versions(tmp_path / "p")
    before = snapshot(project.root)
    with monkeypatch.context() as patch:
        full_disk_for(patch, full)
        run = CliRunner().invoke(app, ["-C", str(project.root), "promote", "gnn", "1.1.0"])
    assert run.exit_code == 1 and run.stderr.startswith("error: could not"), run.stderr
    assert snapshot(project.root) == before  # not changed, and no event: reported as failed
    assert Project.open(project.root).registry.get_champion("gnn").version == "1.0.0"
    again = CliRunner().invoke(app, ["-C", str(project.root), "promote", "gnn", "1.1.0"])
    assert again.exit_code == 0, again.stderr
    assert Project.open(project.root).registry.get_champion("gnn").version == "1.1.0"
    assert [e["version"] for e in promoted(project)] == ["1.0.0", "1.1.0"]


def test_a_rename_done_before_a_failed_directory_fsync_is_reported_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = two_versions(tmp_path / "p")
    real = os.fsync

    def fsync(fd: int) -> None:  # the project directory's, after registry.yaml's rename
        if os.path.samestat(os.fstat(fd), os.stat(project.root)):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    project.registry.promote_to_champion("gnn", "1.1.0")  # it happened: no error
    monkeypatch.undo()
    assert Project.open(project.root).registry.get_champion("gnn").version == "1.1.0"
    assert [e["version"] for e in promoted(project)] == ["1.0.0", "1.1.0"]


def _crash_at_the_commit_point(root: str, finalize: bool) -> None:
    """Die (no cleanup, as kill -9) when registry.yaml is about to be replaced."""
    from mlops_cli import safefs

    real = safefs.atomic_replace

    def replace(where: Path, relpath: object, data: bytes, *args: object, **kw: object) -> None:
        if str(relpath) == "registry.yaml":
            os._exit(9)
        real(where, relpath, data, *args, **kw)  # type: ignore[arg-type]

    safefs.atomic_replace = replace  # type: ignore[assignment]
    project = Project.open(root)
    if finalize:
        project.ab.finalize_test("t", "rollback")
    else:
        project.registry.promote_to_champion("gnn", "1.1.0")


@pytest.mark.parametrize("finalize", [False, True], ids=["promote", "finalize"])
def test_a_crash_at_the_commit_point_leaves_no_event_and_no_archived_test(
    tmp_path: Path, finalize: bool
) -> None:
    project = two_versions(tmp_path / "p")
    project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="1.1.0"))
    if not finalize:
        project.ab.finalize_test("t", "rollback")
    registry = project.registry_path.read_bytes()
    events = project.root / "events.jsonl"
    committed = events.read_bytes()
    proc = multiprocessing.get_context("spawn").Process(
        target=_crash_at_the_commit_point, args=(str(project.root), finalize)
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == 9
    assert project.registry_path.read_bytes() == registry
    assert len(events.read_bytes()) > len(committed)  # the uncommitted event was written...
    reopened = Project.open(project.root)
    assert len(reopened.registry.history()) == len(whole_lines(events)) - 1  # ...and is ignored
    if finalize:
        assert reopened.ab.get_test("t").running  # the registry copy, not the stray archive line
        assert reopened.store.archived_tests() == []
        reopened.ab.finalize_test("t", "rollback")  # the next commit cuts the stray lines
        assert [t["name"] for t in whole_lines(reopened.store.archive_path)] == ["t"]
        kinds = [e["event"] for e in whole_lines(events)]
        assert kinds.count("ab_finalized") == 1
    else:
        assert reopened.registry.get_champion("gnn").version == "1.0.0"
        reopened.registry.promote_to_champion("gnn", "1.1.0")
        assert [e["version"] for e in promoted(reopened)] == ["1.0.0", "1.1.0"]
    assert events.read_bytes().startswith(committed)


def test_a_schema_2_registry_moves_its_finalized_tests_to_the_archive_on_open(
    tmp_path: Path,
) -> None:
    project = two_versions(tmp_path / "p")
    project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="1.1.0"))
    doc = project.store.read().to_doc()  # the whole registry in one file, as schema 2 kept it
    del doc["committed"]
    doc["schema_version"] = 2
    doc["ab_tests"]["t"].update(status="rolled_back", finalized_at="2026-11-02T00:00:00Z")
    old = yaml.safe_dump(doc, sort_keys=False)
    assert "status: rolled_back" in old and "finalized_at: '2026" in old
    project.registry_path.write_text(old)
    reopened = Project.open(project.root)
    assert reopened.store.read().ab_tests == {}
    assert "status: rolled_back" not in project.registry_path.read_text()
    test = reopened.ab.get_test("t")
    assert test.status == "rolled_back" and test.finalized_at == "2026-11-02T00:00:00Z"
    assert [s.test.name for s in reopened.ab.list_tests()] == ["t"]
    with pytest.raises(StateError, match="line 1"):
        reopened.store.archive_path.write_text('{"name": "t", "status": "promoted"}\n')
        reopened.store.archived_tests()
