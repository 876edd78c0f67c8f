"""A time PostgreSQL holds but Python cannot (after year 9999 in UTC, as
`9999-12-31T23:59:59-14:00` is) never stops a read-only view of a PostgreSQL project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from mlops_cli import Project

from . import pg_server as fixtures
from .faults.helpers import ab_project, requests_jsonl

pg_server = fixtures.pg_server
pg_url = fixtures.pg_url

pytestmark = pytest.mark.postgres

FAR = "9999-12-31T23:59:59-14:00"  # 10000-01-01T13:59:59Z


def mlops(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_PROJECT_DIR"}
    return subprocess.run([sys.executable, "-m", "mlops_cli", *args], capture_output=True,
                          text=True, env=env, timeout=300, cwd=cwd)


def with_far_future_rows(url: str) -> None:
    """An A/B test with 200 requests, a drift reference, window and check, and one row of
    each kind whose time was stored directly with SQL (as a bad batch line once could)."""
    import psycopg

    project = ab_project(url)
    try:
        project.ab.record_batch("t", requests_jsonl(200, seed=1))
        detector = project.drift_detector("gnn", "1.0.0")
        rng = np.random.default_rng(2)
        detector.set_reference(b"".join(
            orjson.dumps({"prediction": float(x), "confidence": 0.8}) + b"\n"
            for x in rng.normal(0, 1, 300)
        ))
        detector.record_batch(b"".join(
            orjson.dumps({"prediction": float(x), "confidence": 0.8}) + b"\n"
            for x in rng.normal(0, 1, 300)
        ))
        detector.check()
        project.registry.update_metrics("gnn", "1.0.0", 12.0, 0.5)
    finally:
        project.store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO requests (test, variant, user_id, inference_time_ms, confidence, "
            "error, ts) VALUES ('t', 'control', 'u9', 10, 0.5, false, %s)", [FAR])
        conn.execute(
            "INSERT INTO drift_samples (model_type, version, kind, prediction, confidence, ts) "
            "VALUES ('gnn', '1.0.0', 'production', 0.1, 0.8, %s)", [FAR])
        conn.execute(
            "INSERT INTO metrics (model_type, version, inference_time_ms, confidence, error, "
            "ts) VALUES ('gnn', '1.0.0', 11, 0.5, false, %s)", [FAR])
        conn.execute("UPDATE checks SET ts = %s", [FAR])
        conn.execute("UPDATE events SET ts = %s WHERE id = (SELECT max(id) FROM events)", [FAR])
        for stream in ("ab/t", "drift/gnn/1.0.0/production", "metrics/gnn/1.0.0"):
            conn.execute(
                "UPDATE stream_counts SET records = records + 1, appended = appended + 1 "
                "WHERE stream = %s", [stream])


def test_a_far_future_stored_time_never_stops_a_read_only_view(
    pg_url: str, tmp_path: Path
) -> None:
    with_far_future_rows(pg_url)
    report = mlops("-C", pg_url, "report", "--html", "r.html", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "<!doctype html" in (tmp_path / "r.html").read_text()[:200].lower()
    evaluated = mlops("-C", pg_url, "ab", "evaluate", "t", "--json", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["requests"] == 201  # 200 + the row stored by hand
    for view in (["history", "--json"], ["drift", "report", "gnn", "1.0.0", "--json"],
                 ["list", "--json"], ["ab", "status", "t", "--json"]):
        run = mlops("-C", pg_url, *view, cwd=tmp_path)
        assert run.returncode == 0, (view, run.stderr)
    from mlops_cli.ui import data

    page = data.ab_test(pg_url, "t")
    assert page["narrowing"][-1]["requests"] == 201  # the test page's chart scans every row
    project = Project.open(pg_url)
    try:
        scanned = [r for chunk in project.store.scan("ab/t") for r in chunk]
        assert len(scanned) == 201 and scanned[-1]["ts"] == "10000-01-01T13:59:59.000000Z"
        assert scanned[0]["ts"].endswith("Z") and len(scanned[0]["ts"]) == 27  # stamp's form
    finally:
        project.store.close()


def test_a_copy_of_a_store_with_a_far_future_time_is_refused_naming_it(
    pg_url: str, tmp_path: Path
) -> None:
    with_far_future_rows(pg_url)
    run = mlops("store", "copy", pg_url, str(tmp_path / "copy"), cwd=tmp_path)
    assert run.returncode == 1 and run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "10000-01-01T13:59:59.000000Z" in lines[0] and "record" in lines[0]
    assert list(tmp_path.iterdir()) == []
