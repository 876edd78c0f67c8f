"""Input features on each store: samples carry them (the API and batches), bad ones change
nothing, the reference is profiled once, and feature alarms raise the level, the alert and
the hooks' environment while the score stays the output's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from mlops_cli import Project, ValidationError
from mlops_cli.drift import DriftDetector

from .conftest import dump


def features(project: Project, stream: str, **kw: Any) -> list[dict[str, Any] | None]:
    return [row for chunk in project.store.feature_chunks(stream, **kw) for row in chunk]

REF = "drift/gnn/1.0.0/reference"
PROD = "drift/gnn/1.0.0/production"


def rows(
    n: int, seed: int, shift: float = 0.0, missing: float = 0.0, features: bool = True
) -> list[dict[str, Any]]:
    rng, outputs = np.random.default_rng(seed), np.random.default_rng(seed + 1000)
    out = []
    for i in range(n):
        row: dict[str, Any] = {"prediction": float(outputs.normal()), "confidence": 0.8}
        if features:
            row["features"] = {
                "age": None if i < missing * n else float(rng.normal(40 + shift * 10, 10)),
                "country": str(rng.choice(["de", "fr", "it"])),
                "clicks": int(rng.integers(0, 5)),
            }
        out.append(row)
    return out


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


@pytest.fixture
def detector(project: Project) -> DriftDetector:
    return project.drift_detector("gnn", "1.0.0")


def test_samples_keep_their_features_and_the_seeds_calls_stay_as_they_were(
    project: Project, detector: DriftDetector
) -> None:
    detector.add_production_sample(0.5, 0.9)
    detector.add_production_sample(0.5, 0.9, features={"a": 1.5, "b": "x", "c": True, "d": None})
    detector.record_batch(jsonl([{"prediction": 0.1, "confidence": 0.5, "features": {"a": 2}}]))
    assert features(project, PROD) == [
        None,
        {"a": 1.5, "b": "x", "c": True, "d": None},
        {"a": 2},
    ]
    assert features(project, PROD, last=1) == [{"a": 2}]
    assert features(project, PROD, first=1) == [None]
    first = dump(project)["streams"][PROD][0]
    assert "features" not in first  # a sample without features is stored as before


def test_bad_features_change_nothing(project: Project, detector: DriftDetector) -> None:
    detector.add_production_sample(0.5, 0.9, features={"a": 1})
    before = dump(project)
    with pytest.raises(ValidationError, match="feature 'a' must be a finite number"):
        detector.add_production_sample(0.5, 0.9, features={"a": float("nan")})
    with pytest.raises(ValidationError, match=r"line 2.*feature name"):
        detector.record_batch(
            jsonl(
                [
                    {"prediction": 0.1, "confidence": 0.5, "features": {"a": 2}},
                    {"prediction": 0.1, "confidence": 0.5, "features": {"a b": 2}},
                ]
            )
        )
    assert dump(project) == before


def test_the_reference_is_profiled_once_when_set(
    project: Project, detector: DriftDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    detector.set_reference(jsonl(rows(300, seed=1)))
    kept = project.store.load_profile(REF)
    assert kept is not None and kept["position"] == project.store.position(REF)
    assert sorted(kept["features"]) == ["age", "clicks", "country"]
    detector.record_batch(jsonl(rows(300, seed=2)))

    def never(*_: Any) -> Any:
        raise AssertionError("the reference was read again")

    read = project.store.feature_chunks
    monkeypatch.setattr(
        project.store,
        "feature_chunks",
        lambda stream, **kw: never() if stream == REF else read(stream, **kw),
    )
    detector.check()
    detector.get_drift_report()
    monkeypatch.undo()
    detector.add_reference_sample(0.1, 0.8, features={"age": 30.0})  # the reference changed
    assert detector.feature_profile()["rows"] == 301
    # a smaller drift.reference_size (the first N are the reference) profiles again
    project.set_setting("drift.reference_size", "100")
    assert project.drift_detector("gnn", detector.model_version).feature_profile()["rows"] == 100


def test_a_reference_set_is_not_reported_failed_when_only_its_profile_fails(
    project: Project, detector: DriftDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch is committed before the profile is made: a profile that fails leaves the
    result as it is (a retry would find the batch already recorded), and the next read says."""
    from mlops_cli import feature_drift

    def broken(*_: Any, **__: Any) -> Any:
        raise ValueError("profile failed")

    monkeypatch.setattr(feature_drift, "profile_chunks", broken)
    assert detector.set_reference(jsonl(rows(300, seed=1))) == 300
    assert project.store.load_profile(REF) is None
    with pytest.raises(ValueError, match="profile failed"):
        detector.feature_profile()
    monkeypatch.undo()
    assert detector.feature_profile()["rows"] == 300


def test_feature_alarms_raise_the_level_and_name_the_features(
    project: Project, detector: DriftDetector, tmp_path: Path
) -> None:
    out = tmp_path / "hook.env"
    project.set_setting("drift.hooks.retrain", f'echo "$MLOPS_DRIFTED_FEATURES" > {out}')
    detector.set_reference(jsonl(rows(2000, seed=3)))
    detector.record_batch(jsonl(rows(2000, seed=4, shift=0.5, missing=0.2)))
    report = detector.check()
    assert report.drifted_features == ["age"]
    assert report.level == "retrain" and report.alert_triggered
    assert "Input features drifted: age" in report.recommendation
    age = report.features["age"]
    assert age["drift"]["alarm"] and age["missing"]["alarm"]
    assert not report.features["country"]["alarm"]
    assert out.read_text() == "age\n"
    # The score is the output's: the same predictions without features score the same.
    plain = project.drift_detector("gnn", "1.1.0")
    plain.set_reference(jsonl(rows(2000, seed=3, features=False)))
    plain.record_batch(jsonl(rows(2000, seed=4, shift=0.5, missing=0.2, features=False)))
    bare = plain.check()
    assert bare.current_drift_score == report.current_drift_score
    assert bare.features == {} and bare.drifted_features == [] and bare.level == "ok"
    recorded = project.drift_detector("gnn", "1.0.0").last_check()
    assert recorded is not None
    scores = {name: [f["score"], int(f["alarm"])] for name, f in report.features.items()}
    assert recorded["features"] == {
        "drifted": ["age"], "drifted_share": 1 / 3, "tested": 3, "scores": scores
    }


def test_the_report_is_read_only_with_features(
    project: Project, detector: DriftDetector
) -> None:
    detector.set_reference(jsonl(rows(500, seed=5)))
    detector.record_batch(jsonl(rows(500, seed=6)))
    before = dump(project)
    report = detector.get_drift_report()
    assert sorted(report.features) == ["age", "clicks", "country"]
    assert report.to_dict()["features"]["age"]["kind"] == "numeric"
    assert dump(project) == before
