"""Load: many processes writing one project at once lose and mangle nothing.

Quick sizes here; `make stress` runs the issue's full sizes (16 x 5,000 API calls).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlops_cli import Project

from .helpers import MLOPS, ab_project, requests_jsonl, samples_jsonl, scale, whole_lines

API_WORKER = """
import sys
from mlops_cli import Project
project = Project.open(sys.argv[1])
worker, calls = int(sys.argv[2]), int(sys.argv[3])
for i in range(calls):
    variant = "treatment" if i % 4 == 0 else "control"
    project.ab.record_result("t", variant, 10.0 + worker, 0.5, i % 10 == 0, user_id=f"w{worker}")
"""


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    project = ab_project(tmp_path / "proj")
    calls = scale(400, 5000)
    batch_lines, batches_each = scale(2000, 20000), 3
    drift_lines, drift_batches = scale(1000, 10000), 3
    files = []
    for w in range(4):
        for b in range(batches_each):
            f = tmp_path / f"ab_{w}_{b}.jsonl"
            f.write_bytes(requests_jsonl(batch_lines, seed=100 * w + b))
            files.append(f)
    drift_files = []
    for w in range(2):
        for b in range(drift_batches):
            f = tmp_path / f"drift_{w}_{b}.jsonl"
            f.write_bytes(samples_jsonl(drift_lines, seed=1000 + 100 * w + b))
            drift_files.append(f)

    root = str(project.root)
    procs = [
        subprocess.Popen([sys.executable, "-c", API_WORKER, root, str(w), str(calls)])
        for w in range(16)
    ]
    shell = " && ".join
    for w in range(4):
        chunk = files[w * batches_each : (w + 1) * batches_each]
        procs.append(
            subprocess.Popen(
                ["bash", "-c", shell(f"{MLOPS} -C {root} ab record t --file {f}" for f in chunk)]
            )
        )
    for w in range(2):
        chunk = drift_files[w * drift_batches : (w + 1) * drift_batches]
        procs.append(
            subprocess.Popen(
                [
                    "bash",
                    "-c",
                    shell(f"{MLOPS} -C {root} drift record gnn 1.0.0 --file {f}" for f in chunk),
                ]
            )
        )
    for p in procs:
        assert p.wait(300) == 0

    ab_rows = whole_lines(project.ab_log("t"))  # every line parses
    sent_api = 16 * calls
    sent_batches = len(files) * batch_lines
    assert len(ab_rows) == sent_api + sent_batches
    assert project.ab_log("t").read_bytes().endswith(b"\n")
    per_worker = {}
    for row in ab_rows:
        if "user_id" in row:
            per_worker[row["user_id"]] = per_worker.get(row["user_id"], 0) + 1
    assert per_worker == {f"w{w}": calls for w in range(16)}

    evaluation = Project.open(project.root).ab.evaluate_test("t")
    expected_treatment = 16 * sum(1 for i in range(calls) if i % 4 == 0) + sum(
        row["variant"] == "treatment" for f in files for row in whole_lines(f)
    )
    assert evaluation.requests == sent_api + sent_batches
    assert evaluation.metrics["treatment"]["requests"] == expected_treatment

    production = project.drift_log("gnn", "1.0.0", "production")
    assert len(whole_lines(production)) == len(drift_files) * drift_lines


def test_threads_of_one_service_lose_nothing(tmp_path: Path) -> None:
    """A threaded service (FastAPI runs sync endpoints in a pool) shares one log descriptor."""
    import threading

    project = ab_project(tmp_path / "proj")
    calls, threads = scale(2000, 5000), 8

    def worker(n: int) -> None:
        for i in range(calls):
            project.ab.record_result(
                "t", ("control", "treatment")[i % 2], float(n), 0.5, user_id=f"th{n}"
            )

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    rows = whole_lines(project.ab_log("t"))
    assert len(rows) == calls * threads
    assert Project.open(project.root).ab.evaluate_test("t").requests == calls * threads
