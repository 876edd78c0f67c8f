"""The dashboard's data on the PostgreSQL store: the same adapter, the same answers as the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mlops_cli.ui import data

from . import pg_server as fixtures

pg_server = fixtures.pg_server
pg_url = fixtures.pg_url


def mlops(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_PROJECT_DIR"}
    return subprocess.run([sys.executable, "-m", "mlops_cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_every_page_reads_a_postgresql_project(pg_url: str) -> None:
    assert mlops("demo", pg_url).returncode == 0
    overview = data.overview(pg_url)
    (gnn,) = [m for m in overview["model_types"] if m["model_type"] == "gnn"]
    assert gnn["champion"] == "v2.2.0" and gnn["drift"]["level"] in ("retrain", "critical")
    evaluated = json.loads(mlops("-C", pg_url, "ab", "evaluate", "gnn_v2.2_test", "--json").stdout)
    page = data.ab_test(pg_url, "gnn_v2.2_test")
    assert page["evaluation"]["decision"] == evaluated["decision"] == "promote"
    assert page["evaluation"]["metrics"]["confidence_diff"] == evaluated["metrics"]["confidence_diff"]
    assert page["narrowing"][-1]["requests"] == evaluated["requests"]
    drift = data.drift(pg_url, "gnn", "v2.2.0")
    reported = json.loads(mlops("-C", pg_url, "drift", "report", "gnn", "v2.2.0", "--json").stdout)
    assert drift["report"]["current_drift_score"] == reported["current_drift_score"]
    assert drift["histograms"]["prediction"]["n_reference"] == 5000
    assert [v["version"] for v in data.model(pg_url, "gnn")["versions"]] == ["v2.1.0", "v2.2.0"]
    assert any(e["event"] == "promoted" for e in data.events(pg_url)["events"])
