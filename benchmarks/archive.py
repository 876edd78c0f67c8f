"""Registry commands with many finished A/B tests: the same cost as with none (issue 12 item 8).

Builds two projects, one with no finished test and one with N (default 100,000) archived
through the store's own commit (one transaction that finalizes them), then times the CLI:
`mlops champion gnn`, `mlops promote` (and back), `mlops ab status` of an archived test and
`mlops ab start` (whose name check searches the archive). Prints seconds per command (median
of --repeat runs, each a fresh process) and the ratio of the large project to the empty one.

python benchmarks/archive.py [--tests N] [--repeat R] [--json] [--postgres]

With --postgres both projects are databases on a PostgreSQL server started like the tests do
(tests/pg_server.py, fsync on).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlops_cli import ABTestConfig, ModelVersion, Project
from mlops_cli.state import ABTest

MLOPS = str(Path(sys.executable).with_name("mlops"))
ROOT = Path(__file__).resolve().parent.parent


def build(location: str, finished: int) -> Project:
    project = Project.init(location)
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        project.registry.register_version(ModelVersion("gnn", version, model_path="/m.pt"))
    project.ab.start_test(ABTestConfig("running", "gnn", treatment_version="1.2.0"))
    template = project.ab.finalize_test("running", "rollback")
    with project.store.transaction() as txn:
        for i in range(finished):
            name = f"done-{i:06d}"
            txn.state.ab_tests[name] = ABTest(**{**template.to_dict(), "name": name})
    return project


def timed(location: str, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([MLOPS, "-C", location, *args], check=True, capture_output=True)
    return time.perf_counter() - start


def measure(location: str, repeat: int) -> dict[str, float]:
    out: dict[str, list[float]] = {"champion": [], "promote": [], "ab status": [], "ab start": []}
    for i in range(repeat):
        out["champion"].append(timed(location, "champion", "gnn"))
        out["promote"].append(timed(location, "promote", "gnn", "1.1.0"))
        timed(location, "promote", "gnn", "1.0.0")
        out["ab status"].append(timed(location, "ab", "status", "running"))
        start = ("ab", "start", f"new-{i}", "--model-type", "gnn", "--treatment", "1.2.0")
        out["ab start"].append(timed(location, *start))
        timed(location, "ab", "finalize", f"new-{i}", "rollback")
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        locations = [f"{tmp}/none", f"{tmp}/many"]
        if args.postgres:
            sys.path.insert(0, str(ROOT / "tests"))
            from pg_server import benchmark_server

            server = benchmark_server()
            locations = [server.url(server.create_database()) for _ in range(2)]
        start = time.perf_counter()
        build(locations[0], 0)
        build(locations[1], args.tests)
        built = time.perf_counter() - start
        try:
            none, many = measure(locations[0], args.repeat), measure(locations[1], args.repeat)
        finally:
            if server is not None:
                server.cleanup()
    result = {
        "store": "postgres" if args.postgres else "files",
        "finished_tests": args.tests,
        "build_s": round(built, 1),
        "seconds_with_none": {k: round(v, 3) for k, v in none.items()},
        f"seconds_with_{args.tests}": {k: round(v, 3) for k, v in many.items()},
        "ratio": {k: round(many[k] / none[k], 2) for k in none},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['store']}: {args.tests:,} archived tests (built in {built:.1f} s); "
        f"median of {args.repeat} runs"
    )
    print(f"{'command':<12}{'none (s)':>10}{'many (s)':>10}{'ratio':>8}")
    for key in none:
        print(f"{key:<12}{none[key]:>10.3f}{many[key]:>10.3f}{many[key] / none[key]:>8.2f}")


if __name__ == "__main__":
    main()
