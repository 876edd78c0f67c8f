"""How many acknowledged per-request records a kill -9 loses on PostgreSQL (the only loss
window left: SIGTERM, SIGINT, exits and multiprocessing workers drain the buffer).

    python benchmarks/pg_loss_window.py [--trials N] [--json]

It starts PostgreSQL like the tests do (tests/pg_server.py). A child process appends requests
through the store at the default flush size and interval, acknowledging each on a pipe; after
a random 1-3 s it is killed with SIGKILL, and the acknowledged records missing from the
database are the loss. Two paces: as fast as the process can (the size bound, 1,000 records,
decides) and 200 calls a second (the time bound, 1 s, decides).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pg_server import benchmark_server  # noqa: E402

CHILD = """
import sys, time
from mlops_cli.store.postgres import PostgresStore
store = PostgresStore(sys.argv[1])
pace = float(sys.argv[2])
out = sys.stdout
doc = {"ts": "2026-12-01T00:00:00Z", "variant": "control", "inference_time_ms": 1.0,
       "confidence": 0.5, "error": False}
i = 0
start = time.monotonic()
while True:
    store.append("ab/t", {**doc, "user_id": str(i)})
    out.write(f"{i}\\n")
    out.flush()
    i += 1
    if pace:
        time.sleep(max(0.0, start + i / pace - time.monotonic()))
"""


def trial(url: str, pace: float, rng: random.Random) -> tuple[int, int]:
    """(acknowledged, lost) of one kill -9."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE requests, batches, stream_counts")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(pace)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    acknowledged = set()
    deadline = time.monotonic() + rng.uniform(1.0, 3.0)
    while time.monotonic() < deadline:
        acknowledged.add(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate()
    acknowledged |= set(rest.split())
    acknowledged.discard("")
    with psycopg.connect(url) as conn:
        stored = {r[0] for r in conn.execute("SELECT user_id FROM requests").fetchall()}
    return len(acknowledged), len(acknowledged - stored)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server = benchmark_server()
    os.environ.setdefault("MLOPS_SPOOL_DIR", str(Path(server.top) / "spool"))
    rng = random.Random(20261205)
    results: dict[str, list[tuple[int, int]]] = {}
    try:
        url = server.url(server.create_database())
        from mlops_cli.store.postgres import PostgresStore

        PostgresStore.init(url).close()
        for name, pace in (("as fast as possible", 0.0), ("200 calls/s", 200.0)):
            results[name] = [trial(url, pace, rng) for _ in range(args.trials)]
    finally:
        server.cleanup()
    if args.json:
        print(json.dumps(results))
        return
    for name, runs in results.items():
        lost = [lost for _, lost in runs]
        acked = [acked for acked, _ in runs]
        print(
            f"{name}: lost {min(lost)}-{max(lost)} of {min(acked)}-{max(acked)} acknowledged "
            f"per kill -9 ({args.trials} trials)"
        )


if __name__ == "__main__":
    main()
