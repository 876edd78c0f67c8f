"""Calls per second of the per-request Python API (target: 20,000/s each).

python benchmarks/api_calls.py [--calls N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mlops_cli import ABTestConfig, ModelVersion, Project


def rate(call: Callable[[int], None], calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        call(i)
    return calls / (time.perf_counter() - start)


def measure(calls: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        project = Project.init(Path(tmp))
        registry = project.registry
        registry.register_version(ModelVersion("gnn", "v1.0.0", model_path="/m.pt"))
        registry.register_version(ModelVersion("gnn", "v1.1.0", model_path="/m.pt"))
        project.ab.start_test(ABTestConfig("bench", "gnn", treatment_version="v1.1.0"))
        detector = project.drift_detector("gnn", "v1.0.0")
        variants = ("control", "treatment")
        results = {
            "update_metrics": rate(
                lambda i: registry.update_metrics("gnn", "v1.0.0", 10.0 + i % 7, 0.8, i % 50 == 0),
                calls,
            ),
            "record_result": rate(
                lambda i: project.ab.record_result("bench", variants[i % 2], 12.0, 0.7, False),
                calls,
            ),
            "add_production_sample": rate(
                lambda i: detector.add_production_sample(0.001 * i, 0.9), calls
            ),
        }
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = measure(args.calls)
    if args.json:
        json.dump({k: round(v) for k, v in results.items()}, sys.stdout)
        print()
    else:
        for name, value in results.items():
            print(f"{name:24s} {value:>10,.0f} calls/s  (target 20,000)")


if __name__ == "__main__":
    main()
