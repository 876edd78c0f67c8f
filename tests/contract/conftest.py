"""The shared store contract: every test in this folder runs on each store.

`store_location` is a new, empty project location per test: a directory, and (marked
`postgres`) a new database on the session's PostgreSQL server. Tests set state up and check it
through the library only, so what they pin is what a service or a pipeline relies on, whatever
the store.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from mlops_cli import ModelVersion, Project
from mlops_cli.store.base import Store

from .. import pg_server as fixtures

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
STAMP = "2026-11-01T00:00:00.000000Z"  # T0 as the stores stamp records

pg_server = fixtures.pg_server  # the session's PostgreSQL server (started on first use)
pg_url = fixtures.pg_url  # a new database on it


class Clock:
    """A settable clock, injected into the project (no test waits on wall-clock time)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["files", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a new, empty project lives, for each kind of store."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "proj")


@pytest.fixture
def is_postgres(store_location: str) -> bool:
    return store_location.startswith("postgresql://")


def known_defect(
    request: pytest.FixtureRequest, store: str, reason: str, present: bool = True
) -> None:
    """Mark one store's case of a test as a known defect of that store ("files" or
    "postgres"), while `present` (a check of the defect's cause, where one exists). Strict:
    the test fails once the defect is fixed, so the mark goes with the fix."""
    if present and request.getfixturevalue("is_postgres") == (store == "postgres"):
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def project(store_location: str, clock: Clock) -> Project:
    """A project on the test's clock with model type gnn: 1.0.0 (champion) and 1.1.0."""
    project = Project.init(store_location, clock=clock)
    project.registry.register_version(ModelVersion("gnn", "1.0.0", model_path="m.pt"))
    project.registry.register_version(ModelVersion("gnn", "1.1.0", model_path="m.pt"))
    return project


@pytest.fixture
def store(project: Project) -> Store:
    return project.store


def reopen(project: Project, clock: Clock | None = None) -> Project:
    """The same project as another process would open it (a new store object)."""
    return Project.open(project.store.location, clock=clock)


def dump(project: Project) -> dict[str, Any]:
    """Everything a store holds, read through the Store protocol: the registry state, the
    archive of finalized tests and every record of every stream."""
    store = project.store
    return {
        "registry": store.read().to_doc(),
        "archive": [t.to_dict() for t in store.archived_tests()],
        "streams": {s: [r for chunk in store.scan(s) for r in chunk] for s in store.streams()},
    }


def requests_rows(
    n: int, seed: int, share: float = 0.3, users: int | None = None
) -> list[dict[str, Any]]:
    """Requests of an A/B test; with `users`, each carries one of that many user ids."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for _ in range(n):
        row: dict[str, Any] = {
            "variant": "treatment" if rng.random() < share else "control",
            "inference_time_ms": float(rng.gamma(4, 25)),
            "confidence": float(rng.uniform(0, 1)),
            "error": bool(rng.random() < 0.05),
        }
        if users is not None:
            row["user_id"] = f"u{int(rng.integers(users))}"
        rows.append(row)
    return rows


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def requests_jsonl(n: int, seed: int) -> tuple[bytes, list[dict[str, Any]]]:
    rows = requests_rows(n, seed)
    return jsonl(rows), rows


def samples_jsonl(
    n: int, seed: int, mean: float = 0.0, conf: float = 0.5
) -> tuple[bytes, np.ndarray]:
    """Drift samples: predictions N(mean, 1), confidences uniform around `conf`."""
    rng = np.random.default_rng(seed)
    pred = rng.normal(mean, 1, n)
    confidence = np.clip(rng.uniform(conf - 0.3, conf + 0.3, n), 0, 1)
    data = jsonl(
        [
            {"prediction": float(p), "confidence": float(c)}
            for p, c in zip(pred, confidence, strict=True)
        ]
    )
    return data, np.column_stack([pred, confidence])
