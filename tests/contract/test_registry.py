"""The registry through its manager, on each store: versions, champions, rollbacks,
deprecation, routing and serving metrics, each change with its audit event."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from mlops_cli import ABTestConfig, ConflictError, ModelVersion, NotFoundError, Project

from .conftest import STAMP, Clock, dump, reopen


def events(project: Project) -> list[dict[str, object]]:
    return [e.to_dict() for e in project.registry.history()]


def test_the_first_version_is_champion_and_each_registration_is_audited(
    project: Project,
) -> None:
    first, second = (project.registry.get_version("gnn", v) for v in ("1.0.0", "1.1.0"))
    assert (first.is_champion, first.traffic_percentage) == (True, 100.0)
    assert (second.is_champion, second.traffic_percentage) == (False, 0.0)
    assert second.registered_at == STAMP  # the store's (injected) clock
    kinds = [(e["event"], e["version"], e["actor"]) for e in events(project)]
    assert kinds == [
        ("registered", "1.0.0", "tester"),
        ("promoted", "1.0.0", "tester"),
        ("registered", "1.1.0", "tester"),
    ]
    assert events(project)[1]["reason"] == "first version"
    assert [v.version for v in reopen(project).registry.list_versions("gnn")] == [
        "1.0.0",
        "1.1.0",
    ]


@pytest.mark.parametrize("spelling", ["1.1.0", "v1.1.0"])
def test_a_version_is_registered_once_in_any_spelling(project: Project, spelling: str) -> None:
    before = dump(project)
    with pytest.raises(ConflictError, match="already registered"):
        project.registry.register_version(ModelVersion("gnn", spelling, model_path="other.pt"))
    assert dump(project) == before


def test_promote_and_rollback_move_the_champion_and_its_traffic(
    project: Project, clock: Clock
) -> None:
    project.registry.register_version(ModelVersion("gnn", "1.2.0", model_path="m.pt"))
    project.registry.promote_to_champion("gnn", "1.1.0", reason="better")
    project.registry.promote_to_champion("gnn", "1.2.0")
    traffic = {v.version: v.traffic_percentage for v in project.registry.list_versions("gnn")}
    assert traffic == {"1.0.0": 0.0, "1.1.0": 0.0, "1.2.0": 100.0}
    assert reopen(project).store.read().models["gnn"].champion_history == ["1.0.0", "1.1.0"]
    back = project.registry.rollback("gnn", reason="latency")
    assert back.version == "1.1.0" and back.traffic_percentage == 100.0
    assert project.registry.rollback("gnn").version == "1.0.0"
    promoted = [e for e in events(project) if e["event"] == "promoted"]
    assert [(e["version"], e.get("previous"), e["reason"]) for e in promoted[1:]] == [
        ("1.1.0", "1.0.0", "better"),
        ("1.2.0", "1.1.0", None),
    ]
    rolled = [e for e in events(project) if e["event"] == "rolled_back"]
    assert [(e["version"], e["previous"], e["reason"]) for e in rolled] == [
        ("1.1.0", "1.2.0", "latency"),
        ("1.0.0", "1.1.0", None),
    ]
    before = dump(project)
    with pytest.raises(ConflictError):  # nothing left to roll back to
        project.registry.rollback("gnn")
    assert dump(project) == before


def test_deprecate_is_audited_and_a_deprecated_version_cannot_serve(project: Project) -> None:
    project.registry.deprecate("gnn", "1.1.0", reason="bad data")
    assert project.registry.get_version("gnn", "1.1.0").deprecated is True
    assert events(project)[-1] | {"ts": None} == {
        "ts": None,
        "event": "deprecated",
        "model_type": "gnn",
        "version": "1.1.0",
        "actor": "tester",
        "reason": "bad data",
    }
    before = dump(project)
    for refused in (
        lambda: project.registry.promote_to_champion("gnn", "1.1.0"),
        lambda: project.registry.deprecate("gnn", "1.1.0"),
        lambda: project.registry.deprecate("gnn", "1.0.0"),  # the champion
        lambda: project.ab.start_test(ABTestConfig("t", "gnn", treatment_version="1.1.0")),
    ):
        with pytest.raises(ConflictError):
            refused()
        assert dump(project) == before


def test_unknown_names_change_nothing(project: Project) -> None:
    before = dump(project)
    for refused in (
        lambda: project.registry.promote_to_champion("gnn", "9.0.0"),
        lambda: project.registry.promote_to_champion("rag", "1.0.0"),
        lambda: project.registry.rollback("rag"),
        lambda: project.registry.deprecate("gnn", "9.0.0"),
        lambda: project.registry.update_metrics("gnn", "9.0.0", 10.0, 0.5),
        lambda: project.registry.get_version_for_request("rag", "u1"),
    ):
        with pytest.raises(NotFoundError):
            refused()
        assert dump(project) == before


def test_a_change_made_by_another_store_object_is_seen(project: Project) -> None:
    """Two processes' views of one project: what one commits, the other reads."""
    other = reopen(project)
    other.registry.promote_to_champion("gnn", "1.1.0")
    assert project.registry.require_champion("gnn").version == "1.1.0"
    project.registry.rollback("gnn")
    assert other.registry.require_champion("gnn").version == "1.0.0"
    assert [e.kind for e in other.registry.history(limit=2)] == ["promoted", "rolled_back"]


def test_routing_follows_the_sha256_bucket(project: Project) -> None:
    project.ab.start_test(
        ABTestConfig("exp", "gnn", treatment_version="1.1.0", treatment_traffic_pct=25)
    )
    for i in range(400):
        user = f"user-{i}"
        digest = hashlib.sha256(f"exp:{user}".encode()).digest()
        expected = "1.1.0" if int.from_bytes(digest[:8], "big") % 10000 < 2500 else "1.0.0"
        assert project.registry.get_version_for_request("gnn", user).version == expected
        assert project.ab.assign_variant("gnn", user)["version"] == expected


def test_serving_metrics_equal_a_recomputation(project: Project) -> None:
    rng = np.random.default_rng(11)
    times, confs = rng.gamma(4, 25, 300), rng.uniform(0, 1, 300)
    errors = rng.random(300) < 0.1
    for t, c, e in zip(times, confs, errors, strict=True):
        project.registry.update_metrics("gnn", "1.0.0", float(t), float(c), bool(e))
    for view in (project, reopen(project)):  # this process and another one
        got = view.registry.get_version("gnn", "1.0.0")
        assert got.requests == 300
        assert got.error_rate == pytest.approx(errors.mean(), rel=1e-12)
        assert got.avg_confidence == pytest.approx(confs.mean(), rel=1e-12)
        assert got.avg_inference_time_ms == pytest.approx(times.mean(), rel=1e-12)
    assert project.registry.get_version("gnn", "1.1.0").requests == 0
    rows = [r for chunk in project.store.scan("metrics/gnn/1.0.0") for r in chunk]
    assert [r["ts"] for r in rows] == [STAMP] * 300
    assert [r["error"] for r in rows] == errors.tolist()


def test_history_filters_by_model_type_and_keeps_the_last(project: Project) -> None:
    project.registry.register_version(ModelVersion("rag", "0.1.0", model_path="r.pt"))
    project.registry.promote_to_champion("gnn", "1.1.0")
    assert [e.kind for e in project.registry.history("rag")] == ["registered", "promoted"]
    assert [e["version"] for e in project.registry.history("gnn", limit=2)] == [
        "1.1.0",
        "1.1.0",
    ]
    assert len(project.registry.history()) == 6
    assert {e["ts"] for e in project.registry.history()} == {STAMP}


def test_history_pages_walk_the_log_newest_first_with_a_cursor(project: Project) -> None:
    """Pages of 3, of every event and of one kind of one model type, join up to the whole
    history (read in full, oldest first, then reversed: an independent path)."""
    registry = project.registry
    registry.register_version(ModelVersion("rag", "1.0.0", model_path="m.pt"))
    for _ in range(3):
        registry.promote_to_champion("gnn", "1.1.0")
        registry.rollback("gnn", reason="again")
    every = [e.to_dict() for e in reversed(registry.history())]

    def walk(**match: Any) -> list[dict[str, Any]]:
        got, before = [], None
        while True:
            page = registry.history_page(limit=3, before=before, **match)
            assert len(page) <= 3
            got += [e.to_dict() for e in page]
            if page.next is None:
                return got
            before = page.next

    assert walk() == every
    gnn_rollbacks = [e for e in every if e["model_type"] == "gnn" and e["event"] == "rolled_back"]
    assert walk(model_type="gnn", kind="rolled_back") == gnn_rollbacks
    assert len(gnn_rollbacks) == 3 and registry.history_page("gnn", "rolled_back", 3).next is None
    changes = walk(model_type="gnn", kind=("promoted", "rolled_back"))
    assert [e["event"] for e in changes] == ["rolled_back", "promoted"] * 3 + ["promoted"]
    assert walk(model_type="rag") == [e for e in every if e["model_type"] == "rag"]
    with pytest.raises(NotFoundError):
        registry.history_page("nope")
