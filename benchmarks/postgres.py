"""The PostgreSQL store against the bare database: every figure a ratio from one run.

    python benchmarks/postgres.py [--url URL] [--quick] [--json]

Without --url it starts Debian's PostgreSQL like the tests do (tests/pg_server.py: as the
`postgres` user, a temp data directory, a free 127.0.0.1 port) and stops it at the end.
The four cases (DESIGN section 11, issue 13):
- batch: append_batch of 1,000,000 JSONL requests vs `psql \\copy` of the same rows (CSV) into
  the same table, emptied before each (target >= 0.8x the rows/s);
- append: append() of single requests through the buffer (target >= 20,000 calls/s);
- summary: summary() over 10,000,000 requests vs the same GROUP BY run bare (target <= 1.5x);
- window: samples(last=10,000) over 2,000,000 samples vs over 10,000 (target <= 1.2x).
--quick shrinks the sizes tenfold for a smoke run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlops_cli.records import validate_request  # noqa: E402
from mlops_cli.store.postgres import REQUESTS, PostgresStore, text_lines, upgrade  # noqa: E402
from mlops_cli.store.postgres.copy import _validated_chunk  # noqa: E402

TS = "2026-11-26T00:00:00Z"
COLUMNS = "test, variant, user_id, user_id_is_int, inference_time_ms, confidence, error, ts"


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def requests(n: int) -> tuple[bytes, bytes]:
    """The same requests as JSONL (for mlops) and CSV rows of the requests table (for psql)."""
    rng = np.random.default_rng(1)
    variant = np.where(rng.random(n) < 0.5, "control", "treatment")
    user = rng.integers(0, 100_000, n)
    latency = np.round(rng.gamma(2.0, 10.0, n), 3)
    confidence = np.round(rng.random(n), 6)
    error = rng.random(n) < 0.05
    jsonl = b"".join(
        orjson.dumps(
            {
                "variant": str(v),
                "user_id": int(u),
                "inference_time_ms": float(t),
                "confidence": float(c),
                "error": bool(e),
                "ts": TS,
            }
        )
        + b"\n"
        for v, u, t, c, e in zip(variant, user, latency, confidence, error, strict=True)
    )
    csv = "".join(
        f"bench,{v},{u},t,{t!r},{c!r},{'t' if e else 'f'},{TS}\n"
        for v, u, t, c, e in zip(
            variant.tolist(),
            user.tolist(),
            latency.tolist(),
            confidence.tolist(),
            error.tolist(),
            strict=True,
        )
    ).encode()
    return jsonl, csv


def run(url: str, quick: bool) -> list[dict[str, Any]]:
    scale = 10 if quick else 1
    batch_n, append_n = 1_000_000 // scale, 200_000 // scale
    summary_n, window_big, window = 10_000_000 // scale, 2_000_000 // scale, 10_000
    upgrade(url)
    store = PostgresStore.init(url, force=True)
    conn = store.conn
    psql = "psql"
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/psql")):
        psql = str(candidate)
    results = []

    # -- batch ---------------------------------------------------------------------------------
    jsonl, csv = requests(batch_n)
    with tempfile.NamedTemporaryFile(suffix=".csv") as f:
        f.write(csv)
        f.flush()
        os.chmod(f.name, 0o644)

        def empty() -> None:
            conn.execute("TRUNCATE requests, batches, stream_counts")
            conn.execute("CHECKPOINT")

        theirs: list[float] = []
        ours: list[float] = []
        stamped: list[float] = []  # the same lines without ts: stamped by the store
        without_ts = jsonl.replace(b',"ts":"' + TS.encode() + b'"', b"")
        for attempt in range(3):
            empty()
            started = time.perf_counter()
            subprocess.run(
                [psql, url, "-q", "-c", f"\\copy requests ({COLUMNS}) FROM '{f.name}' CSV"],
                check=True,
            )
            theirs.append(time.perf_counter() - started)
            empty()
            started = time.perf_counter()
            result = store.append_batch("ab/bench", jsonl, validate_request, f"b{attempt}")
            ours.append(time.perf_counter() - started)
            assert result.recorded == batch_n
            empty()
            started = time.perf_counter()
            store.append_batch("ab/bench", without_ts, validate_request, f"s{attempt}")
            stamped.append(time.perf_counter() - started)
    results.append(
        {
            "case": f"batch of {batch_n:,} requests: append_batch vs psql \\copy (rows/s)",
            "ours_s": min(ours),
            "theirs_s": min(theirs),
            "ratio": min(theirs) / min(ours),
            "target": ">= 0.8",
        }
    )
    for label, data in (("with ts", jsonl), ("without ts", without_ts)):
        started = time.perf_counter()
        lines = io.BytesIO(data).readlines()
        records = _validated_chunk(lines, 0, validate_request, orjson.loads, [])
        parsed = time.perf_counter() - started
        text_lines(REQUESTS, "bench\t", records, TS)
        results.append(
            {
                "case": f"  in Python alone, {label}: parse + validate, then COPY lines (s)",
                "parse_validate_s": parsed,
                "format_s": time.perf_counter() - started - parsed,
            }
        )
        del lines, records
    results.append(
        {
            "case": f"the same {batch_n:,} requests without ts (stamped by the store)",
            "ours_s": min(stamped),
            "theirs_s": min(theirs),
            "ratio": min(theirs) / min(stamped),
            "target": ">= 0.8",
        }
    )

    # -- append --------------------------------------------------------------------------------
    record = {
        "ts": TS,
        "variant": "control",
        "user_id": "u1",
        "inference_time_ms": 12.5,
        "confidence": 0.9,
        "error": False,
    }
    append = store.append

    def appends() -> None:
        for _ in range(append_n):
            append("ab/append", record)
        store.flush()

    seconds = best(appends, 2)
    results.append(
        {
            "case": f"append() of {append_n:,} single requests through the buffer (calls/s)",
            "ours_s": seconds,
            "calls_per_s": append_n / seconds,
            "target": ">= 20000",
        }
    )

    # -- summary -------------------------------------------------------------------------------
    conn.execute(
        f"INSERT INTO requests ({COLUMNS}) SELECT 'big', "
        "CASE WHEN random() < 0.5 THEN 'control' ELSE 'treatment' END, (i %% 100000)::text, "
        "true, random() * 50, random(), random() < 0.05, now() FROM generate_series(1, %s) i",
        [summary_n],
    )
    conn.execute("VACUUM ANALYZE requests")
    bare_sql = (
        "SELECT variant, count(*), sum(error::int), sum(confidence), "
        "sum(confidence * confidence), sum(inference_time_ms), "
        "sum(inference_time_ms * inference_time_ms) FROM requests WHERE test = 'big' GROUP BY 1"
    )
    per_user_sql = (
        "SELECT variant, user_id, count(*), sum(error::int), sum(confidence), "
        "sum(inference_time_ms) FROM requests WHERE test = 'big' GROUP BY 1, 2"
    )

    def bare() -> None:  # what `ab evaluate` needs: per arm, and per user and arm
        conn.execute(bare_sql).fetchall()
        conn.execute(per_user_sql).fetchall()

    def evaluate_sums() -> None:
        store.summary("ab/big", "variant", ("control", "treatment"), per_user=True)

    evaluate_sums()  # warm the cache of both alike
    ours_s = best(evaluate_sums, 3)
    theirs_s = best(bare, 3)
    results.append(
        {
            "case": f"ab evaluate's sums over {summary_n:,} requests (per arm and per user) "
            "vs the bare GROUP BYs (time)",
            "ours_s": ours_s,
            "theirs_s": theirs_s,
            "ratio": ours_s / theirs_s,
            "target": "<= 1.5",
        }
    )

    # -- window --------------------------------------------------------------------------------
    for name, n in (("big", window_big), ("small", window)):
        conn.execute(
            "INSERT INTO drift_samples (model_type, version, kind, prediction, confidence, ts) "
            "SELECT 'm', %s, 'production', random(), random(), now() "
            "FROM generate_series(1, %s)",
            ["1.0.0" if name == "big" else "2.0.0", n],
        )
    conn.execute("VACUUM ANALYZE drift_samples")
    big = best(lambda: store.samples("drift/m/1.0.0/production", last=window), 15)
    small = best(lambda: store.samples("drift/m/2.0.0/production", last=window), 15)
    results.append(
        {
            "case": f"samples(last={window:,}) over {window_big:,} vs over {window:,} (time)",
            "ours_s": big,
            "theirs_s": small,
            "ratio": big / small,
            "target": "<= 1.2",
        }
    )
    store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="an empty database to use (default: start a server)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from pg_server import benchmark_server

        server = benchmark_server()  # or pass --url
        url = server.url(server.create_database())
    try:
        results = run(url, args.quick)
    finally:
        if server is not None:
            server.cleanup()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        if "format_s" in r:
            print(f"{r['case']}: {r['parse_validate_s']:.2f} + {r['format_s']:.2f}")
            continue
        figure = f"ratio {r['ratio']:.2f}" if "ratio" in r else f"{r['calls_per_s']:,.0f} calls/s"
        print(f"{r['case']}: {figure} (target {r['target']}; ours {r['ours_s']:.3f} s)")


if __name__ == "__main__":
    main()
