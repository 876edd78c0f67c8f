"""A diagnosis service that routes, records and watches model versions with mlops.

    pip install fastapi uvicorn
    MLOPS_PROJECT_DIR=/srv/mlops uvicorn examples.fastapi_service:app

The original service's integration, with only its import line changed to `mlops_cli`.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from mlops_cli import ab_test_manager, drift_detectors, get_drift_detector, model_registry

app = FastAPI(title="diagnosis")
TEST_NAME = "gnn_v2.2_test"


class DiagnosisRequest(BaseModel):
    user_id: str
    features: list[float]


def predict(model_path: str, features: list[float]) -> tuple[float, float]:
    """Stand-in for the real model: (anomaly score, confidence)."""
    score = sum(features) / max(len(features), 1)
    return score, min(max(1.0 - abs(score) / 10, 0.0), 1.0)


@app.post("/diagnose")
def diagnose(request: DiagnosisRequest) -> dict[str, Any]:
    variant = ab_test_manager.assign_variant("gnn", request.user_id)
    model = variant["model"]
    started = time.perf_counter()
    error = False
    try:
        score, confidence = predict(model.model_path, request.features)
    except Exception:
        error, score, confidence = True, 0.0, 0.0
    elapsed_ms = (time.perf_counter() - started) * 1000
    model_registry.update_metrics(model_type="gnn", version=variant["version"],
                                  inference_time_ms=elapsed_ms, confidence=confidence, error=error)
    if TEST_NAME in ab_test_manager._active_tests:
        ab_test_manager.record_result(TEST_NAME, variant["name"], elapsed_ms, confidence, error)
    if not error:
        get_drift_detector("gnn", variant["version"]).add_production_sample(score, confidence)
    return {"version": variant["version"], "score": score, "confidence": confidence}


@app.get("/drift")
def drift() -> list[dict[str, Any]]:
    """The seed's "check drift of all models" loop, over the public equivalent."""
    return [detector.get_drift_report() for detector in drift_detectors().values()]
