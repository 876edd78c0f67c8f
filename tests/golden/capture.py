"""The JSON of every command the demo and the README tour leave to explore, normalized.

Run as a script to record tests/data/golden.json; tests/test_golden.py compares against it.
Timestamps, paths and clock-dependent figures are normalized: what remains must not change
when the code is restructured.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
GOLDEN = ROOT / "tests" / "data" / "golden.json"
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
CLOCK_KEYS = {"days_elapsed", "duration_s"}
PATH_KEYS = {"value_sha256"}  # fingerprints of settings that hold the project's path

QUERIES = [
    ["list", "--json"],
    ["show", "gnn", "--json"],
    ["show", "gnn", "v2.1.0", "--json"],
    ["champion", "gnn", "--json"],
    ["history", "--json"],
    ["ab", "list", "--json"],
    ["ab", "status", "gnn_v2.2_test", "--json"],
    ["ab", "evaluate", "gnn_v2.2_test", "--json"],
    ["drift", "report", "gnn", "v2.2.0", "--json"],
    ["config", "list", "--json"],
    ["verify", "gnn", "v2.2.0", "--json"],
]


def normalize(value: Any, root: str, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: normalize(v, root, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v, root, key) for v in value]
    if isinstance(value, str):
        if key in PATH_KEYS:
            return "<fingerprint>"
        if key == "webhook":  # a new endpoint's id is random
            return "<webhook id>"
        if TS.match(value):
            return "<ts>"
        return value.replace(root, "<root>")
    if isinstance(value, float):
        if key in CLOCK_KEYS:
            return round(value, 1)
        return float(f"{value:.9g}")
    return value


def mlops(args: list[str], cwd: Path, project: Path) -> Any:
    env = {**os.environ, "MLOPS_ACTOR": "golden", "NO_COLOR": "1"}
    env.pop("MLOPS_PROJECT_DIR", None)
    run = subprocess.run(
        [sys.executable, "-m", "mlops_cli", "-C", str(project), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    doc = json.loads(run.stdout) if run.stdout.strip() else None
    return {"exit": run.returncode, "json": normalize(doc, str(project))}


def capture(workdir: Path) -> dict[str, Any]:
    demo = workdir / "demo"
    env = {**os.environ, "MLOPS_ACTOR": "golden"}
    subprocess.run(
        [sys.executable, "-m", "mlops_cli", "demo", str(demo)],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    out: dict[str, Any] = {"demo": {" ".join(q): mlops(q, workdir, demo) for q in QUERIES}}
    tour = workdir / "tour"
    tour.mkdir()
    env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env.pop("MLOPS_PROJECT_DIR", None)
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S):
        subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tour, env=env,
                       check=True, capture_output=True, timeout=120)
    project = next(p.parent for p in tour.rglob("registry.yaml"))
    out["tour"] = {" ".join(q): mlops(q, tour, project) for q in QUERIES}
    return out


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        GOLDEN.write_text(json.dumps(capture(Path(tmp)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
