"""Every Python snippet of the original module's README (tests/data/seed-README.md) runs as
written, with only its import line changed (`mlops` -> `mlops_cli`).

Each snippet runs in a project set up the way its section assumes (the registry snippet finds
v2.1.0 in production, the A/B snippet finds v2.2.0 registered, ...). The drift snippet's `...`
placeholders ("anomaly_score from model") are the model's outputs: the test fills them in,
and supplies the service's own objects (`app`, `gnn_service`, `monitoring.metrics`).
"""

from __future__ import annotations

import asyncio
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlops_cli
from mlops_cli import ABTestConfig, ModelVersion, Project

SEED = Path(__file__).parent / "data" / "seed-README.md"


def snippets() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", SEED.read_text(), flags=re.S)
    return [b for b in blocks if "@dataclass" not in b]  # the API listing is not code to run


def snippet(containing: str) -> str:
    (found,) = [s for s in snippets() if containing in s]
    return re.sub(r"^from mlops(\.\w+)? import", "from mlops_cli import", found, flags=re.M)


@pytest.fixture
def seed_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """The default project the seed's module-level names bind to, with v2.1.0 in production."""
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(tmp_path / "proj"))
    monkeypatch.setattr(mlops_cli, "_default", None)
    project = Project.init(tmp_path / "proj")
    project.registry.register_version(
        ModelVersion("gnn", "v2.1.0", model_path="/models/gnn_v2.1.0.pt")
    )
    yield project


def run(code: str, **names: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "seed", **names}
    exec(compile(code, "seed-README.md", "exec"), namespace)
    return namespace


def test_every_snippet_is_covered() -> None:
    assert len(snippets()) == 7


def test_model_versioning(seed_project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    run(snippet("new_gnn = ModelVersion("))
    assert capsys.readouterr().out == "Current GNN: v2.1.0\n"
    assert seed_project.registry.get_version("gnn", "v2.2.0").config["num_layers"] == 4
    assert seed_project.registry.get_version("gnn", "v2.1.0").requests == 1


def test_ab_testing(seed_project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    seed_project.registry.register_version(ModelVersion("gnn", "v2.2.0", model_path="/m"))
    ns = run(snippet("ab_test_manager.start_test(test_config)"))
    assert ns["variant"]["name"] in ("control", "treatment")
    assert ns["evaluation"]["decision"] == "continue"  # one request, day 0
    assert "name='control'" in capsys.readouterr().out  # print(variant) shows name and version


def test_drift_detection(seed_project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    code = snippet("detector.add_reference_sample(prediction, confidence)")
    code = code.replace("prediction = ...", "prediction = float(rng.normal(0, 1))")
    code = code.replace("confidence = ...", "confidence = float(rng.uniform(0.7, 1))")
    model = types.SimpleNamespace(
        predict=lambda x: {"anomaly_score": x, "confidence": float(rng.uniform(0.3, 0.8))}
    )
    production_data = list(rng.normal(1.5, 1, 500))
    ns = run(code, rng=rng, model=model, production_data=production_data)
    assert isinstance(ns["drift_score"], float) and ns["drift_score"] > 0.3
    assert "Drift detected" in capsys.readouterr().out
    assert ns["report"]["alert_triggered"] is True and ns["report"]["status"] == "active"


def test_the_reference_keeps_the_first_samples_with_one_warning(seed_project: Project) -> None:
    detector = mlops_cli.get_drift_detector("gnn", "v2.1.0")
    seed_project.set_setting("drift.reference_size", "100")
    with pytest.warns(UserWarning, match="reference") as caught:
        for i in range(150):
            detector.add_reference_sample(float(i), 0.9)
    assert len(caught) == 1
    assert seed_project.store.count("drift/gnn/v2.1.0/reference") == 100


def test_diagnosis_service(seed_project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_project.registry.register_version(ModelVersion("gnn", "v2.2.0", model_path="/m"))
    seed_project.ab.start_test(ABTestConfig("gnn_v2.2_test", "gnn", treatment_version="v2.2.0"))
    recorded: list[dict[str, Any]] = []
    metrics = types.ModuleType("monitoring.metrics")
    metrics.record_gnn_metrics = lambda **kw: recorded.append(kw)  # type: ignore[attr-defined]
    metrics.record_rag_metrics = lambda **kw: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "monitoring", types.ModuleType("monitoring"))
    monkeypatch.setitem(sys.modules, "monitoring.metrics", metrics)

    class App:
        def post(self, path: str) -> Any:
            return lambda f: f

    async def predict(equipment_id: str, model_version: str) -> dict[str, Any]:
        return {"inference_time_ms": 120.0, "anomaly_score": 0.4, "confidence": 0.9}

    ns = run(snippet("async def create_diagnosis"), app=App(),
             gnn_service=types.SimpleNamespace(predict=predict))
    result = asyncio.run(ns["create_diagnosis"]("pump-7", "user123"))
    assert result["confidence"] == 0.9 and recorded[0]["model_version"] in ("v2.1.0", "v2.2.0")
    assert sum(seed_project.ab.status("gnn_v2.2_test").requests.values()) == 1


def test_utilities(seed_project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    seed_project.registry.register_version(ModelVersion("gnn", "v2.2.0", model_path="/m"))
    ns = run(snippet("for v in model_registry.list_versions('gnn')"))
    assert capsys.readouterr().out.splitlines() == [
        "v2.1.0: champion=True, traffic=100.0%",
        "v2.2.0: champion=False, traffic=0.0%",
    ]
    run(snippet("model_registry.promote_to_champion('gnn', 'v2.2.0')"), **ns)
    assert seed_project.registry.require_champion("gnn").version == "v2.2.0"
    # drift of all models: one with too few samples still formats a float score
    rng = np.random.default_rng(1)
    for version, n in (("v2.1.0", 300), ("v2.2.0", 20)):
        detector = seed_project.drift_detector("gnn", version)
        for p in rng.normal(0, 1, n):
            detector.add_reference_sample(float(p), 0.9)
            detector.add_production_sample(float(p) + 0.1, 0.9)
    run(snippet("for key, detector in _drift_detectors.items()"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "('gnn', 'v2.2.0'): 0.000" and lines[0].startswith("('gnn', 'v2.1.0'): 0.")


def test_the_module_level_names_follow_mlops_project_dir_per_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call looks at MLOPS_PROJECT_DIR again (and, with none set, at the current
    directory): a change made through os.environ is followed by the next call."""
    from mlops_cli import ab_test_manager, model_registry

    monkeypatch.setattr(mlops_cli, "_default", None)
    monkeypatch.setattr(mlops_cli, "_default_key", None)
    a, b = Project.init(tmp_path / "a"), Project.init(tmp_path / "b")
    for project, champion in ((a, "v1.0.0"), (b, "v2.0.0")):
        project.registry.register_version(ModelVersion("gnn", champion, model_path="/m.pt"))  # the first: champion
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(a.root))
    assert ab_test_manager.assign_variant("gnn", "u").version == "v1.0.0"
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(b.root))
    assert ab_test_manager.assign_variant("gnn", "u").version == "v2.0.0"
    model_registry.update_metrics("gnn", "v2.0.0", 10.0, 0.5)
    monkeypatch.delenv("MLOPS_PROJECT_DIR")
    monkeypatch.chdir(a.root)
    assert ab_test_manager.assign_variant("gnn", "u").version == "v1.0.0"
    assert b.store.count("metrics/gnn/v2.0.0") == 1
    assert a.store.count("metrics/gnn/v1.0.0") == 0
