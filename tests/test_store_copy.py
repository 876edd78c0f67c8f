"""`mlops store copy`: a directory project into PostgreSQL and back; the registry, every record
and every decision come out the same (issue 13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.golden.capture import normalize

from . import pg_server as fixtures

pg_server = fixtures.pg_server
pg_url = fixtures.pg_url

QUERIES = [
    ["list", "--json"],
    ["champion", "gnn", "--json"],
    ["history", "--json"],
    ["ab", "list", "--json"],
    ["ab", "evaluate", "gnn_v2.2_test", "--json"],
    ["drift", "report", "gnn", "v2.2.0", "--json"],
    ["config", "list", "--json"],
]


def mlops(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_PROJECT_DIR"}
    return subprocess.run([sys.executable, "-m", "mlops_cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def answers(location: str, demo: Path) -> dict[str, Any]:
    out = {}
    for query in QUERIES:
        run = mlops("-C", location, *query)
        assert run.returncode == 0, (location, query, run.stderr)
        out[" ".join(query)] = normalize(json.loads(run.stdout), str(demo))
    return out


def test_a_project_copied_into_postgresql_and_back_answers_the_same(
    pg_url: str, tmp_path: Path
) -> None:
    demo = tmp_path / "demo"
    assert mlops("demo", str(demo)).returncode == 0
    there = mlops("store", "copy", str(demo), pg_url, "--json")
    assert there.returncode == 0, there.stderr
    back = tmp_path / "back"
    assert mlops("store", "copy", pg_url, str(back), "--json").returncode == 0
    want = answers(str(demo), demo)
    got = answers(pg_url, demo)
    assert got == want, _diff(got, want)[:8]
    assert answers(str(back), demo) == want
    records = json.loads(there.stdout)["records"]
    assert records["ab/gnn_v2.2_test"] == 7 * 1500
    assert records["drift/gnn/v2.2.0/reference"] == 5000
    assert mlops("store", "copy", str(demo), pg_url).returncode == 1  # not into a used store


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]
