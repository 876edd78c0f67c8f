"""examples/fastapi_service.py driven through FastAPI's TestClient, on a directory project and on
a PostgreSQL one: each request is routed as `assign_variant` says, recorded under the user's
test with the user's id, counted in the version's metrics, and sampled for drift."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path
from types import ModuleType

import numpy as np
import orjson
import pytest

import mlops_cli
from mlops_cli import ABTestConfig, ModelVersion, Project

from . import pg_server as fixtures

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # after the skip

pg_server = fixtures.pg_server  # the session's server
pg_url = fixtures.pg_url  # a new database on it

SERVICE = Path(__file__).parent.parent / "examples" / "fastapi_service.py"
TEST = "gnn_v2.2_test"
USERS = 120


def load_service() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_service", SERVICE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def project_with_a_test(location: str | Path, models: Path) -> None:
    project = Project.init(location)
    try:
        rng = np.random.default_rng(3)
        for version in ("v2.1.0", "v2.2.0"):
            path = models / f"gnn_{version}.pt"
            path.write_bytes(b"weights")
            project.registry.register_version(
                ModelVersion(model_type="gnn", version=version, model_path=str(path))
            )
            project.drift_detector("gnn", version).set_reference(
                b"".join(
                    orjson.dumps({"prediction": float(x), "confidence": 0.9}) + b"\n"
                    for x in rng.normal(0, 1, 500)
                )
            )
        project.ab.start_test(
            ABTestConfig(
                name=TEST,
                model_type="gnn",
                control_version="v2.1.0",
                treatment_version="v2.2.0",
                treatment_traffic_pct=50,
            )
        )
    finally:
        project.store.close()


def drive(location: str | Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_PROJECT_DIR", str(location))
    monkeypatch.setattr(mlops_cli, "_default", None)
    service = load_service()
    served: Counter[str] = Counter()
    with TestClient(service.app) as client:  # its lifespan closes (and flushes) the store
        for user in range(USERS):
            # two requests a user: one user's requests stay with one version
            for features in ([0.1, 0.3], [0.2, 0.2]):
                response = client.post(
                    "/diagnose", json={"user_id": f"user{user}", "features": features}
                )
                assert response.status_code == 200, response.text
                # the time its mlops calls took, for benchmarks/fastapi_load.py
                name, duration = response.headers["server-timing"].split(";dur=")
                assert name == "mlops" and float(duration) >= 0
                body = response.json()
                served[body["variant"]] += 1
                assert body["score"] == pytest.approx(0.2)
    # what the service recorded, read back from a new connection
    project = Project.open(location)
    try:
        expected = Counter(
            project.ab.assign_variant("gnn", f"user{user}")["name"] for user in range(USERS)
        )
        assert served == {arm: 2 * users for arm, users in expected.items()}
        assert set(served) == {"control", "treatment"}
        assert project.ab.status(TEST).requests == dict(served)
        evaluation = project.ab.evaluate_test(TEST)
        assert evaluation.requests == 2 * USERS and evaluation.unit == "user"
        for arm, version in (("control", "v2.1.0"), ("treatment", "v2.2.0")):
            assert project.registry.metrics("gnn", version).n == served[arm]
    finally:
        project.store.close()
    monkeypatch.setattr(mlops_cli, "_default", None)
    with TestClient(service.app) as client:
        reports = client.get("/drift").json()
    by_version = {r["model_version"]: r for r in reports}
    assert by_version.keys() == {"v2.1.0", "v2.2.0"}
    assert by_version["v2.1.0"]["n_window"] == served["control"]
    assert by_version["v2.2.0"]["n_window"] == served["treatment"]


def test_service_on_a_directory_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project_with_a_test(tmp_path / "project", tmp_path)
    drive(tmp_path / "project", monkeypatch)


@pytest.mark.postgres
def test_service_on_a_postgresql_project(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_with_a_test(pg_url, tmp_path)
    drive(pg_url, monkeypatch)


@pytest.mark.postgres
def test_the_default_project_on_a_url_is_opened_once(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request calls the seed-style globals: on a URL they must reuse one store (one
    connection), not open one per call until the server refuses clients."""
    Project.init(pg_url).store.close()
    monkeypatch.setenv("MLOPS_PROJECT_DIR", pg_url)
    monkeypatch.setattr(mlops_cli, "_default", None)
    first = mlops_cli.default_project()
    try:
        assert mlops_cli.default_project() is first
    finally:
        first.store.close()
        monkeypatch.setattr(mlops_cli, "_default", None)
