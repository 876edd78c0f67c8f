"""A diagnosis service that routes, records and watches model versions with mlops.

    pip install '.[postgres]' fastapi uvicorn   # in a checkout of mlops
    MLOPS_PROJECT_DIR=postgresql://mlops@db.internal/mlops uvicorn examples.fastapi_service:app
    MLOPS_PROJECT_DIR=/srv/mlops uvicorn examples.fastapi_service:app  # or a directory

The same code runs on either store: MLOPS_PROJECT_DIR names a project directory or a
`postgresql://` URL (several service hosts then share one project). The original service's
integration with its import line changed to `mlops_cli`, requests recorded with the user's id
(so the test's split and metrics are on users), and the recorded test taken from the
assignment instead of a fixed name.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from pydantic import BaseModel

from mlops_cli import (
    ab_test_manager,
    default_project,
    drift_detectors,
    get_drift_detector,
    model_registry,
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # On PostgreSQL, per-request records are buffered and written in batches (by size and by
    # time); closing writes what is left, so a clean shutdown loses nothing.
    default_project().store.close()


app = FastAPI(title="diagnosis", lifespan=lifespan)


class DiagnosisRequest(BaseModel):
    user_id: str
    features: list[float]


def predict(model_path: str, features: list[float]) -> tuple[float, float]:
    """Stand-in for the real model: (anomaly score, confidence)."""
    score = sum(features) / max(len(features), 1)
    return score, min(max(1.0 - abs(score) / 10, 0.0), 1.0)


@app.post("/diagnose")
def diagnose(request: DiagnosisRequest, response: Response) -> dict[str, Any]:
    in_mlops = time.perf_counter()
    variant = ab_test_manager.assign_variant("gnn", request.user_id)
    model = variant["model"]
    started = time.perf_counter()
    in_mlops = started - in_mlops
    error = False
    try:
        score, confidence = predict(model.model_path, request.features)
    except Exception:
        error, score, confidence = True, 0.0, 0.0
    recording = time.perf_counter()
    elapsed_ms = (recording - started) * 1000
    model_registry.update_metrics(model_type="gnn", version=variant["version"],
                                  inference_time_ms=elapsed_ms, confidence=confidence, error=error)
    if variant.test is not None:  # the user is in a running test: record it under that test
        ab_test_manager.record_result(variant.test, variant["name"], elapsed_ms, confidence,
                                      error, user_id=request.user_id)
    if not error:
        get_drift_detector("gnn", variant["version"]).add_production_sample(score, confidence)
    in_mlops += time.perf_counter() - recording
    # What mlops cost this request (routing and recording), for a browser's or a load test's
    # timing view: the standard Server-Timing header, in milliseconds.
    response.headers["Server-Timing"] = f"mlops;dur={in_mlops * 1000:.3f}"
    return {"version": variant["version"], "variant": variant["name"], "score": score,
            "confidence": confidence}


@app.get("/drift")
def drift() -> list[dict[str, Any]]:
    """The seed's "check drift of all models" loop, over the public equivalent (a report is a
    mapping; `to_dict()` gives the plain dict FastAPI returns as JSON)."""
    return [detector.get_drift_report().to_dict() for detector in drift_detectors().values()]
