"""Aliases on every store: set, move, delete, look up; refused where they would mislead."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mlops_cli import ModelVersion, Project
from mlops_cli.errors import ConflictError, NotFoundError, ValidationError
from mlops_cli.prometheus import exposition
from mlops_cli.registry import ModelRegistry, validate_alias

from .conftest import dump, reopen


def test_an_alias_points_at_a_version_moves_and_is_audited(project: Project) -> None:
    registry = project.registry
    registry.set_alias("gnn", "shadow", "1.1.0", reason="shadow traffic")
    assert reopen(project).registry.get_version_by_alias("gnn", "shadow").version == "1.1.0"
    registry.set_alias("gnn", "shadow", "1.0.0")
    other = reopen(project).registry
    assert other.get_version_by_alias("gnn", "shadow").version == "1.0.0"
    assert [a.to_dict() for a in other.aliases()] == [
        {"model_type": "gnn", "alias": "shadow", "version": "1.0.0"}
    ]
    registry.delete_alias("gnn", "shadow")
    assert reopen(project).registry.aliases("gnn") == []
    events = [e for e in registry.history("gnn") if e["event"].startswith("alias")]
    assert [(e["event"], e["version"], e.get("previous")) for e in events] == [
        ("alias_set", "1.1.0", None),
        ("alias_set", "1.0.0", "1.1.0"),
        ("alias_deleted", "1.0.0", None),
    ]
    assert events[0]["reason"] == "shadow traffic"


def test_the_version_an_alias_names_is_spelled_as_registered(project: Project) -> None:
    project.registry.set_alias("gnn", "canary", "v1.1.0")  # SemVer-equal to 1.1.0
    assert project.registry.aliases("gnn")[0].version == "1.1.0"


def test_deprecating_a_version_removes_its_aliases_in_the_same_change(project: Project) -> None:
    project.registry.set_alias("gnn", "shadow", "1.1.0")
    project.registry.set_alias("gnn", "stable", "1.0.0")
    project.registry.deprecate("gnn", "1.1.0")
    assert [a.alias for a in reopen(project).registry.aliases("gnn")] == ["stable"]
    last = project.registry.history("gnn")[-1]
    assert (last["event"], last["alias"], last["reason"]) == (
        "alias_deleted",
        "shadow",
        "its version was deprecated",
    )


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda r: r.set_alias("gnn", "x", "9.9.9"), NotFoundError),
        (lambda r: r.set_alias("nope", "x", "1.0.0"), NotFoundError),
        (lambda r: r.set_alias("gnn", "1.2.0", "1.0.0"), ValidationError),
        (lambda r: r.set_alias("gnn", "bad/name", "1.0.0"), ValidationError),
        (lambda r: r.set_alias("gnn", "champion", "1.0.0"), ValidationError),
        (lambda r: r.set_alias("gnn", "old", "1.2.0"), ConflictError),  # deprecated
        (lambda r: r.set_alias("gnn", "stable", "1.0.0"), ConflictError),  # already there
        (lambda r: r.delete_alias("gnn", "nope"), NotFoundError),
        (lambda r: r.get_version_by_alias("gnn", "nope"), NotFoundError),
    ],
)
def test_a_refused_alias_changes_nothing(
    project: Project, call: Callable[[ModelRegistry], object], error: type[Exception]
) -> None:
    project.registry.set_alias("gnn", "stable", "1.0.0")
    project.registry.register_version(ModelVersion("gnn", "1.2.0", model_path="m.pt"))
    project.registry.deprecate("gnn", "1.2.0")
    before = dump(project)
    with pytest.raises(error):
        call(project.registry)
    assert dump(reopen(project)) == before


@pytest.mark.parametrize(
    ("alias", "ok"),
    [
        ("shadow", True),
        ("canary-2", True),
        ("Stable.eu", True),
        ("vnext", True),
        ("v2", False),  # reads as a version
        ("2024-q1", False),
        ("1.0.0", False),
        ("champion", False),
        ("", False),
        ("a" * 64, True),
        ("a" * 65, False),
        ("-x", False),
    ],
)
def test_alias_names(alias: str, ok: bool) -> None:
    if ok:
        assert validate_alias(alias) == alias
    else:
        with pytest.raises(ValidationError):
            validate_alias(alias)


def test_aliases_are_exported_as_info_series(project: Project) -> None:
    project.registry.set_alias("gnn", "shadow", "1.1.0")
    text = exposition(project).decode()
    assert 'model_alias_info{alias="shadow",model_type="gnn",version="1.1.0"} 1.0' in text
