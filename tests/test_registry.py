"""The registry through the Python API, checked against hand calculations."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlops_cli import (
    ConflictError,
    ModelVersion,
    NotFoundError,
    Project,
    ValidationError,
)
from mlops_cli.registry import bucket


def register(project: Project, version: str, model_type: str = "gnn", **kw: object) -> ModelVersion:
    return project.registry.register_version(
        ModelVersion(model_type=model_type, version=version, model_path=f"/m/{version}.pt"),
        **kw,  # type: ignore[arg-type]
    )


def test_first_version_is_champion_with_all_traffic(project: Project) -> None:
    first = register(project, "v1.0.0")
    second = register(project, "v1.1.0")
    assert first.is_champion and first.traffic_percentage == 100.0
    assert not second.is_champion and second.traffic_percentage == 0.0
    assert project.registry.get_champion("gnn").version == "v1.0.0"  # type: ignore[union-attr]


def test_no_champion_flag_leaves_model_without_champion(project: Project) -> None:
    register(project, "v1.0.0", make_champion=False)
    assert project.registry.get_champion("gnn") is None
    with pytest.raises(NotFoundError, match="no champion"):
        project.registry.require_champion("gnn")


def test_duplicate_version_is_refused(project: Project) -> None:
    register(project, "v1.0.0")
    with pytest.raises(ConflictError, match="already registered"):
        register(project, "v1.0.0")


def test_promote_sets_traffic_and_rollback_restores(project: Project) -> None:
    register(project, "v1.0.0")
    register(project, "v1.1.0")
    register(project, "v1.2.0")
    project.registry.promote_to_champion("gnn", "v1.1.0", reason="better")
    project.registry.promote_to_champion("gnn", "v1.2.0")
    traffic = {v.version: v.traffic_percentage for v in project.registry.list_versions("gnn")}
    assert traffic == {"v1.0.0": 0.0, "v1.1.0": 0.0, "v1.2.0": 100.0}
    assert project.registry.rollback("gnn").version == "v1.1.0"
    assert project.registry.rollback("gnn").version == "v1.0.0"
    with pytest.raises(ConflictError, match="no earlier champion"):
        project.registry.rollback("gnn")
    kinds = [e["event"] for e in project.registry.history("gnn")]
    assert kinds == [
        "registered",
        "promoted",
        "registered",
        "registered",
        "promoted",
        "promoted",
        "rolled_back",
        "rolled_back",
    ]
    promoted = project.registry.history("gnn")[4]
    assert promoted["reason"] == "better" and promoted["actor"] == "tester"


def test_deprecated_version_cannot_be_promoted(project: Project) -> None:
    register(project, "v1.0.0")
    register(project, "v1.1.0")
    project.registry.deprecate("gnn", "v1.1.0")
    with pytest.raises(ConflictError, match="deprecated"):
        project.registry.promote_to_champion("gnn", "v1.1.0")
    with pytest.raises(ConflictError, match="champion"):
        project.registry.deprecate("gnn", "v1.0.0")


def test_rollback_skips_a_deprecated_previous_champion(project: Project) -> None:
    for v in ("v1.0.0", "v1.1.0", "v1.2.0"):
        register(project, v)
    project.registry.promote_to_champion("gnn", "v1.1.0")
    project.registry.promote_to_champion("gnn", "v1.2.0")
    project.registry.deprecate("gnn", "v1.1.0")
    assert project.registry.rollback("gnn").version == "v1.0.0"


def test_update_metrics_is_cumulative(project: Project) -> None:
    register(project, "v1.0.0")
    obs = [(10.0, 0.9, False), (20.0, 0.7, True), (30.0, 0.8, False), (40.0, 0.6, True)]
    for ms, conf, err in obs:
        project.registry.update_metrics("gnn", "v1.0.0", ms, conf, err)
    v = project.registry.get_version("gnn", "v1.0.0")
    assert v.requests == 4
    assert v.error_rate == pytest.approx(0.5)
    assert v.avg_inference_time_ms == pytest.approx(25.0)
    assert v.avg_confidence == pytest.approx(0.75)
    # A second process's view (no cache in memory) agrees, and appends keep counting.
    fresh = Project.open(project.root)
    fresh.registry.update_metrics("gnn", "v1.0.0", 50.0, 1.0, False)
    v = project.registry.get_version("gnn", "v1.0.0")
    assert (v.requests, v.avg_inference_time_ms) == (5, pytest.approx(30.0))
    assert v.avg_confidence == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("ms", "conf", "message"),
    [
        (10.0, 1.5, "confidence"),
        (10.0, -0.1, "confidence"),
        (10.0, float("nan"), "finite"),
        (10.0, float("inf"), "finite"),
        (-1.0, 0.5, "inference_time_ms"),
    ],
)
def test_update_metrics_rejects_bad_values(
    project: Project, ms: float, conf: float, message: str
) -> None:
    register(project, "v1.0.0")
    with pytest.raises(ValidationError, match=message):
        project.registry.update_metrics("gnn", "v1.0.0", ms, conf)
    assert not project.metrics_log("gnn", "v1.0.0").exists()


def test_verify_detects_a_changed_model_file(project: Project, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights-1")
    project.registry.register_version(ModelVersion("gnn", "v1.0.0", model_path=str(model)))
    v = project.registry.get_version("gnn", "v1.0.0")
    assert v.sha256 == hashlib.sha256(b"weights-1").hexdigest() and v.size_bytes == 9
    assert project.registry.verify("gnn", "v1.0.0")["ok"] is True
    model.write_bytes(b"weights-2")
    result = project.registry.verify("gnn", "v1.0.0")
    assert result["ok"] is False and result["status"] == "mismatch"


def test_routing_without_a_test_serves_the_champion(project: Project) -> None:
    register(project, "v1.0.0")
    register(project, "v1.1.0")
    versions = {
        project.registry.get_version_for_request("gnn", f"u{i}").version for i in range(200)
    }
    assert versions == {"v1.0.0"}


def test_bucket_is_the_documented_sha256_rule() -> None:
    digest = hashlib.sha256(b"exp:user123").digest()
    assert bucket("exp", "user123") == int.from_bytes(digest[:8], "big") % 10000


def test_versions_sort_by_semver(project: Project) -> None:
    for v in ("v1.10.0", "v1.2.0", "1.2.0-rc.1", "v1.2.0-alpha"):
        register(project, v)
    assert [v.version for v in project.registry.list_versions("gnn")] == [
        "v1.2.0-alpha",
        "1.2.0-rc.1",
        "v1.2.0",
        "v1.10.0",
    ]


def test_seed_snippet_runs_with_only_the_import_changed(tmp_path: Path) -> None:
    Project.init(tmp_path)
    seed = textwrap.dedent("""
        from mlops_cli import ModelVersion, model_registry

        new_gnn = ModelVersion(model_type='gnn', version='v2.2.0', model_path='/models/gnn_v2.2.0.pt',
                               config={'architecture': 'GraphSAGE', 'hidden_dim': 256, 'num_layers': 4})
        model_registry.register_version(new_gnn)
        champion = model_registry.get_champion('gnn')
        model_registry.update_metrics(model_type='gnn', version='v2.2.0', inference_time_ms=124.5,
                                      confidence=0.87, error=False)
        for v in model_registry.list_versions('gnn'):
            print(f"{v.version}: champion={v.is_champion}, traffic={v.traffic_percentage}%")
        print(champion.version, model_registry.get_champion('gnn').requests)
    """)
    out = subprocess.run(
        [sys.executable, "-c", seed], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == ["v2.2.0: champion=True, traffic=100.0%", "v2.2.0 1"]


def test_relative_model_paths_are_relative_to_the_project(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project.root / "models").mkdir()
    (project.root / "models" / "m.pt").write_bytes(b"weights")
    monkeypatch.chdir(tmp_path)  # somewhere else entirely
    v = project.registry.register_version(ModelVersion("gnn", "v1.0.0", model_path="models/m.pt"))
    assert v.sha256 == hashlib.sha256(b"weights").hexdigest()
    assert project.registry.verify("gnn", "v1.0.0")["ok"] is True


def test_routing_during_a_test_follows_the_ab_assignment(project: Project) -> None:
    from mlops_cli import ABTestConfig

    register(project, "v1.0.0")
    register(project, "v1.1.0")
    project.ab.start_test(
        ABTestConfig("t", "gnn", treatment_version="v1.1.0", treatment_traffic_pct=30)
    )
    routed = [project.registry.get_version_for_request("gnn", f"u{i}").version for i in range(2000)]
    expected = ["v1.1.0" if bucket("t", f"u{i}") < 3000 else "v1.0.0" for i in range(2000)]
    assert routed == expected and 500 < routed.count("v1.1.0") < 700
