"""A drift check's cost must not grow with the log: window 10,000 over 2,000,000 lines vs 10,000.

python benchmarks/drift_window.py [--big 2000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from mlops_cli import ModelVersion, Project


def lines(rng: np.random.Generator, n: int, mean: float) -> bytes:
    pred, conf = rng.normal(mean, 1, n), np.clip(rng.normal(0.8, 0.05, n), 0, 1)
    ts = "2026-11-26T00:00:00.000000Z"
    return b"".join(
        orjson.dumps({"ts": ts, "prediction": float(p), "confidence": float(c)}) + b"\n"
        for p, c in zip(pred, conf, strict=True)
    )


def timed_check(project: Project, version: str, repeat: int) -> float:
    detector = project.drift_detector("gnn", version)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        detector.check(window=10_000)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        project = Project.init(Path(tmp))
        reference = lines(rng, 10_000, 0.0)
        chunk = lines(rng, 100_000, 0.1)
        for version, size in (("1.0.0", 10_000), ("2.0.0", args.big)):
            project.registry.register_version(ModelVersion("gnn", version, model_path="/m"))
            detector = project.drift_detector("gnn", version)
            detector.set_reference(reference)
            with open(detector.production_path, "wb") as f:
                for _ in range(size // 100_000):
                    f.write(chunk)
                f.write(b"".join(chunk.splitlines(keepends=True)[: size % 100_000]))
        timed_check(project, "1.0.0", 1)  # warm imports
        small = timed_check(project, "1.0.0", args.repeat)
        big = timed_check(project, "2.0.0", args.repeat)
        print(
            f"drift check, window 10,000: 10,000-line log {small * 1000:.1f} ms, "
            f"{args.big:,}-line log {big * 1000:.1f} ms, ratio {big / small:.2f} "
            "(target at most 1.2)"
        )


if __name__ == "__main__":
    main()
