"""Finished A/B tests through the CLI: archived, still shown, and their names kept."""

from __future__ import annotations

from collections.abc import Callable

from mlops_cli import ABTestConfig, ModelVersion, Project

from .conftest import Run, assert_one_error_line


def finished_test(project: Project) -> None:
    for v in ("1.0.0", "1.1.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="/m"))
    project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="1.1.0"))
    project.ab.finalize_test("t", "rollback")


def test_a_finished_test_is_archived_and_still_shown(
    project: Project, cli: Callable[..., Run]
) -> None:
    finished_test(project)
    assert "ab_tests: {}" in project.registry_path.read_text()
    assert '"name":"t"' in (project.root / "archive" / "ab_tests.jsonl").read_text()
    status = cli("ab", "status", "t", "--json")
    assert status.exit_code == 0 and status.json()["status"] == "rolled_back"
    evaluation = cli("ab", "evaluate", "t", "--json")
    assert evaluation.exit_code == 0 and evaluation.json()["test"] == "t"
    listed = cli("ab", "list", "--json")
    assert [t["name"] for t in listed.json()] == ["t"]
    again = cli("ab", "start", "t", "--model-type", "gnn", "--treatment", "1.1.0")
    assert_one_error_line(again, "already exists", "rolled_back")


def test_init_force_puts_the_archive_away_with_the_logs(
    project: Project, cli: Callable[..., Run]
) -> None:
    finished_test(project)
    assert cli("init", "--force", "--archive-logs").exit_code == 0
    assert not (project.root / "archive" / "ab_tests.jsonl").exists()
    moved = list((project.root / "archive").glob("project-*/ab_tests.jsonl"))
    assert len(moved) == 1
    fresh = Project.open(project.root)
    assert fresh.store.archived_tests() == [] and fresh.ab.list_tests() == []
