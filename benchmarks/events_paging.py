"""The audit log's pages on a long log: time, size and memory of a page of /api/events.

    python benchmarks/events_paging.py [--events 1000000] [--limit 100]

Writes a directory project whose events.jsonl holds --events events (written directly, then
committed by one registration), serves it with `mlops ui`'s server in this process, and asks
for the newest page, a page from the middle of the log (the cursor: the start of the line at
its middle byte) and the newest page of a rare kind (1 event in 10,000). For each it prints the
answer's bytes, the time to answer and the peak Python memory (tracemalloc) of the request.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from pathlib import Path

import orjson

from mlops_cli import ModelVersion, Project
from mlops_cli.ui.server import make_server, url_of

KINDS = ("registered", "promoted", "rolled_back", "deprecated")


def build(root: Path, n: int) -> Path:
    project = Project.init(root)
    rng = random.Random(1)
    with open(root / "events.jsonl", "wb") as f:
        for start in range(0, n, 100_000):
            f.write(
                b"".join(
                    orjson.dumps(
                        {
                            "ts": "2026-01-01T00:00:00.000000Z",
                            "event": KINDS[rng.randrange(4)] if i % 10_000 else "setting_changed",
                            "model_type": "gnn",
                            "version": f"1.0.{i}",
                            "actor": "ci",
                            "reason": "a reason of some length, as people write them",
                        }
                    )
                    + b"\n"
                    for i in range(start, min(n, start + 100_000))
                )
            )
    project.registry.register_version(ModelVersion("gnn", "9.0.0", model_path="/m"))
    return root / "events.jsonl"


def measure(url: str) -> tuple[int, float, int]:
    """Bytes and seconds of an answer (untraced), then the peak memory of the same request
    under tracemalloc (which slows it)."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as resp:
        body = resp.read()
    took = time.perf_counter() - started
    tracemalloc.start()
    with urllib.request.urlopen(url, timeout=600) as resp:
        resp.read()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return len(body), took, peak - len(body)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        log = build(Path(tmp) / "p", args.events)
        size = log.stat().st_size
        took = time.perf_counter() - started
        print(f"{args.events:,} events, {size / 1e6:.0f} MB (written in {took:.1f} s)")
        server = make_server(str(Path(tmp) / "p"))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = url_of(server).rstrip("/")
        with open(log, "rb") as f:  # a cursor in the middle: the start of the line there
            f.seek(size // 2)
            f.readline()
            middle = f.tell()
        cases = {
            "newest page": f"/api/events?limit={args.limit}",
            "page from the middle": f"/api/events?limit={args.limit}&before={middle}",
            "rare kind (1 in 10,000)": f"/api/events?limit={args.limit}&kind=setting_changed",
        }
        measure(base + cases["newest page"])  # warm
        for name, path in cases.items():
            nbytes, took, peak = measure(base + path)
            print(
                f"{name:26} {nbytes / 1024:7.0f} KB  {took * 1000:7.0f} ms  "
                f"peak {peak / 1e6:5.1f} MB beyond the answer"
            )
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
