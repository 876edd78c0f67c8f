"""Peak memory and throughput of a streamed batch, at two sizes (issue 15, "Batches").

    python benchmarks/batch_memory.py [--sizes 1000000 4000000] [--postgres] [--json]

Runs `mlops ab record T --file` and `mlops drift record M V --file` under /usr/bin/time -v on
generated files, in a new project each, and prints the maximum resident set size and the
lines per second of each (with --postgres, in a new database on a server started as the
tests do, tests/pg_server.py; the RSS is the client's). Targets: peak within 20% between
the sizes and under 150 MB; at least 300,000 lines/s.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MLOPS = str(Path(PY).with_name("mlops"))


def write_requests(path: Path, n: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        step = 100_000
        for base in range(0, n, step):
            m = min(step, n - base)
            arm = np.where(rng.random(m) < 0.5, "treatment", "control")
            ms = rng.uniform(1, 200, m)
            conf = rng.uniform(0, 1, m)
            err = np.where(rng.random(m) < 0.05, "true", "false")
            f.writelines(
                f'{{"variant":"{a}","inference_time_ms":{t:.3f},"confidence":{c:.6f},'
                f'"error":{e}}}\n'
                for a, t, c, e in zip(arm, ms, conf, err, strict=True)
            )


def write_samples(path: Path, n: int, seed: int = 2) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        step = 100_000
        for base in range(0, n, step):
            m = min(step, n - base)
            f.writelines(
                f'{{"prediction":{p:.6f},"confidence":{c:.6f}}}\n'
                for p, c in zip(rng.normal(0, 1, m), rng.uniform(0, 1, m), strict=True)
            )


def mlops(root: Path | str, *args: str) -> None:
    subprocess.run([MLOPS, "-C", str(root), *args], check=True, capture_output=True)


def measured(cmd: list[str]) -> tuple[float, float]:
    """(seconds, max RSS in MB) of one run under /usr/bin/time -v."""
    start = time.perf_counter()
    run = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {run.stderr[-2000:]}")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)
    if found is None:
        raise SystemExit("no maximum resident set size in /usr/bin/time -v's output")
    return seconds, int(found[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server: Any = None
    if args.postgres:
        sys.path.insert(0, str(ROOT / "tests"))
        from pg_server import benchmark_server

        server = benchmark_server()
    try:
        rows = measure(args.sizes, server)
    finally:
        if server is not None:
            server.cleanup()
    report(rows, args.json)


def measure(sizes: list[int], server: Any) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlops-batch-") as tmp:
        work = Path(tmp)
        for n in sizes:
            requests, samples = work / f"r{n}.jsonl", work / f"s{n}.jsonl"
            write_requests(requests, n)
            write_samples(samples, n)
            for kind, source in (("ab record", requests), ("drift record", samples)):
                root: Path | str = work / f"p-{kind.split()[0]}-{n}"
                if server is not None:
                    root = server.url(server.create_database())
                mlops(root, "init")
                mlops(root, "register", "gnn", "1.0.0", "--path", "/m/1")
                mlops(root, "register", "gnn", "1.1.0", "--path", "/m/2")
                if kind == "ab record":
                    mlops(root, "ab", "start", "t", "--model-type", "gnn",
                          "--treatment", "1.1.0", "--traffic", "50")
                    cmd = [MLOPS, "-C", str(root), "ab", "record", "t", "--file", str(source)]
                else:
                    cmd = [MLOPS, "-C", str(root), "drift", "record", "gnn", "1.0.0",
                           "--file", str(source)]
                seconds, mb = measured(cmd)
                rows.append({
                    "case": kind, "store": "postgres" if server else "files", "lines": n,
                    "mb_file": round(source.stat().st_size / 2**20, 1),
                    "seconds": round(seconds, 2), "lines_per_s": round(n / seconds),
                    "max_rss_mb": round(mb, 1),
                })
            requests.unlink()
            samples.unlink()
    return rows


def report(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['store']:8} {r['case']:13} {r['lines']:>9,} lines ({r['mb_file']:>6} MB): "
              f"{r['seconds']:>6} s, {r['lines_per_s']:>9,} lines/s, max RSS {r['max_rss_mb']} MB")
    for kind in ("ab record", "drift record"):
        peaks = [r["max_rss_mb"] for r in rows if r["case"] == kind]
        if len(peaks) > 1:
            print(f"{kind}: peak ratio largest/smallest {max(peaks) / min(peaks):.2f}")


if __name__ == "__main__":
    main()
