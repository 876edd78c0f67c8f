"""`mlops ab record --file` throughput on a 1,000,000-line batch, against the floor.

    python benchmarks/ab_record.py [--lines 1000000]

The floor parses each line with orjson, checks the same fields, and writes the lines out:
the least any all-or-nothing batch append can do. Target: at most 2 times the floor and at
least 300,000 lines a second.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from mlops_cli import ABTestConfig, ModelVersion, Project


def make_batch(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    treated = rng.random(n) < 0.1
    conf = np.clip(rng.normal(0.8, 0.1, n), 0, 1)
    ms = rng.normal(100, 10, n).clip(0)
    err = rng.random(n) < 0.02
    with open(path, "wb") as f:
        for t, c, m, e in zip(treated, conf, ms, err, strict=True):
            f.write(
                orjson.dumps(
                    {
                        "variant": "treatment" if t else "control",
                        "inference_time_ms": float(m),
                        "confidence": float(c),
                        "error": bool(e),
                    }
                )
                + b"\n"
            )


def floor(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    data = src.read_bytes()
    out = []
    for line in data.splitlines():
        r = orjson.loads(line)
        if r["variant"] not in ("control", "treatment") or not (
            math.isfinite(r["confidence"])
            and 0 <= r["confidence"] <= 1
            and math.isfinite(r["inference_time_ms"])
            and r["inference_time_ms"] >= 0
        ):
            raise ValueError(line)
        out.append(line)
    dst.write_bytes(b"\n".join(out) + b"\n")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        batch = root / "batch.jsonl"
        make_batch(batch, args.lines)
        project = Project.init(root / "proj")
        for v in ("1.0.0", "1.1.0"):
            project.registry.register_version(ModelVersion("gnn", v, model_path="/m"))
        project.ab.start_test(ABTestConfig("bench", "gnn", treatment_version="1.1.0"))
        mlops = Path(sys.executable).with_name("mlops")
        start = time.perf_counter()
        subprocess.run(
            [str(mlops), "-C", str(project.root), "ab", "record", "bench", "--file", str(batch)],
            check=True,
            capture_output=True,
        )
        ours = time.perf_counter() - start
        base = floor(batch, root / "floor.jsonl")
        print(
            f"ab record --file, {args.lines:,} lines: {ours:.2f} s "
            f"({args.lines / ours:,.0f} lines/s), floor {base:.2f} s, "
            f"ratio {ours / base:.2f} (targets: at most 2, at least 300,000 lines/s)"
        )


if __name__ == "__main__":
    main()
