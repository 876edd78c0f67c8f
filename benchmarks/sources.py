"""Sources side by side: mlops reading a lake against the bare engine on the same files.

    python benchmarks/sources.py [--json] [--quick] [--requests N] [--only duckdb spark drift]
        [--keep DIR] [--memory-limit 160MB] [--threads 1]

- duckdb: `mlops ab evaluate` of a test whose requests are N Parquet rows of N/100 users
  (written by DuckDB's own COPY), with the source's `memory_limit` and `threads` set, against
  a bare DuckDB process running the same two-level GROUP BY (per user, then per arm) with the
  same settings. Target: at most 1.3x, and the mlops process's peak memory under 300 MB.
- spark: `ABTestManager.evaluate_test` over N/10 rows (default 10,000,000) against the bare
  Spark SQL query in the same local session. Target: at most 1.5x.
- drift: `mlops drift check --window 1000000` from a 10,000,000-row Parquet source
  partitioned by day, against the same check on the project's own log. Target: at most 3x.

`--quick` divides every size by 100 (a smoke run; the targets are meant for the full sizes).
Sizes: `--requests` (default 100,000,000: about 3 GB of Parquet; say which size a figure
used). `--keep DIR` writes the generated requests into DIR and reuses them on the next run.
`--memory-limit` and `--threads` are DuckDB's on both sides of the duckdb case (default 160MB
and 2 threads up to 10,000,000 requests, else 500MB and 1 thread). At 100,000,000 requests of
1,000,000 users the per-user hash table holds every user (about 150 MB) in each thread, and
below a 500MB memory_limit DuckDB 2.0.1 takes it out of core and fails (both queries, after
spilling GBs); so one thread, one table. The Parquet is written in row groups of 122,880 rows
(DuckDB's COPY default): DuckDB's reader holds about a row group's column chunks per thread
(about 110 MB at 1,000,000-row groups, 20 MB at 122,880).

The requests are stamped from START on, and the test starts at START (an A/B source counts
the requests from the test's start on); the bare query has the same time bound.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PY = sys.executable
MLOPS = str(Path(PY).with_name("mlops"))
THREADS = 2
THREADS_FULL = 1  # beyond 10,000,000 requests (see the docstring)
MEMORY = "160MB"  # DuckDB's memory_limit on both sides (at 10,000,000 requests ours fails at 128MB)
MEMORY_FULL = "500MB"  # beyond 10,000,000 requests (see the docstring)
ROW_GROUP = 122_880  # rows per Parquet row group: DuckDB's COPY default
START = "2026-03-02T00:00:00Z"  # the test's start and the first request's ts

# The bare query: the sums the decision needs, per user then per arm (written here
# independently of mlops_cli/sources/queries.py).
BARE_SUMS = """
WITH u AS (
  SELECT variant, user_id, count(*) AS d, sum(CAST(error AS INT)) AS e, sum(confidence) AS c,
    sum(confidence * confidence) AS cc, sum(inference_time_ms) AS t,
    sum(inference_time_ms * inference_time_ms) AS tt,
    count(*) FILTER (WHERE inference_time_ms > 120.0) AS s
  FROM {relation} WHERE ts >= CAST('{start}' AS TIMESTAMP) GROUP BY variant, user_id
)
SELECT variant, count(*), sum(d), sum(d * d), sum(e), sum(e * e), sum(e * d), sum(c), sum(cc),
  sum(c * c), sum(c * d), sum(t), sum(tt), sum(t * t), sum(t * d), sum(s), sum(s * s),
  sum(s * d)
FROM u GROUP BY variant
"""


def run_timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of one command."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) not in (0, 3):  # --json errors go to stdout
            out.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed: {out.read().decode()[-800:]}")
    return elapsed, usage.ru_maxrss * 1024


def mlops(root: Path, *args: str) -> str:
    done = subprocess.run(
        [MLOPS, "-C", str(root), *args], check=True, capture_output=True, text=True
    )
    return done.stdout


def write_requests(path: Path, n: int, users: int) -> None:
    """n requests of `users` users over 3 days, by DuckDB's COPY (no Python row loop)."""
    import duckdb

    con = duckdb.connect(config={"threads": THREADS, "memory_limit": "1GB"})
    con.execute(
        f"""COPY (
      SELECT CASE WHEN hash(uid) % 2 = 0 THEN 'control' ELSE 'treatment' END AS variant,
        'u' || uid AS user_id,
        least(1.0, greatest(0.0, 0.7 + 0.1 * (random() - 0.5))) AS confidence,
        50 + 100 * random() AS inference_time_ms,
        random() < 0.02 AS error,
        TIMESTAMPTZ '{START}'
          + to_microseconds(CAST(i * (259200000000 // {n}) AS BIGINT)) AS ts,
        i AS seq
      FROM (SELECT range AS i, (range * 7919) % {users} AS uid FROM range({n}))
    ) TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP})"""
    )
    con.close()


def requests_file(tmp: Path, keep: Path | None, n: int) -> tuple[Path, float | None]:
    """The Parquet requests of the duckdb and spark cases (and the seconds it took to write
    them, None when reused from --keep)."""
    folder = keep or tmp
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"requests-{n}-rg{ROW_GROUP}.parquet"
    if keep is not None and path.exists():
        return path, None
    started = time.perf_counter()
    write_requests(path, n, max(n // 100, 10))
    return path, time.perf_counter() - started


def project_with_source(root: Path, source: dict[str, Any]) -> None:
    """A project whose test `t` reads its requests from `source`, started at START (the
    API with a clock: the CLI starts a test now, after the generated requests)."""
    from datetime import datetime

    from mlops_cli import ABTestConfig, ModelVersion, Project
    from mlops_cli.sources import Source

    Project.init(root)
    project = Project.open(root, clock=lambda: datetime.fromisoformat(START))
    for v in ("1.0.0", "1.1.0"):
        project.registry.register_version(ModelVersion("gnn", v, model_path="/m"))
    project.ab.start_test(
        ABTestConfig("t", "gnn", treatment_version="1.1.0", treatment_traffic_pct=50.0),
        Source.from_doc(source),
    )


def duckdb_case(
    tmp: Path, n: int, repeat: int, keep: Path | None, memory: str, threads: int
) -> list[dict[str, Any]]:
    path, generated = requests_file(tmp, keep, n)
    root = tmp / "duck"
    project_with_source(
        root, {"engine": "duckdb", "path": str(path), "threads": threads, "memory_limit": memory}
    )
    query = BARE_SUMS.format(relation=f"read_parquet('{path}')", start=START)
    spill = os.path.join(tempfile.gettempdir(), "mlops-duckdb")  # as mlops sets it
    bare = (
        "import duckdb\n"
        f"con = duckdb.connect(config={{'threads': {threads}, 'memory_limit': '{memory}', "
        f"'temp_directory': {spill!r}}})\n"
        "con.execute(\"SET TimeZone = 'UTC'\")\n"
        f"con.execute({query!r}).fetchall()\n"
    )
    # Untimed, once: the first evaluation after the first day also takes the tail threshold
    # from the first day's requests (a second query, then recorded in the test).
    done = subprocess.run([MLOPS, "-C", str(root), "ab", "evaluate", "t", "--json"],
                          capture_output=True, text=True)
    counted = json.loads(done.stdout).get("requests")
    if counted != n:
        raise RuntimeError(f"ab evaluate counted {counted} requests, not {n}: {done.stdout}")
    ours, theirs, peak, bare_peak = [], [], 0, 0
    for _ in range(repeat):
        t, rss = run_timed([MLOPS, "-C", str(root), "ab", "evaluate", "t", "--json"])
        ours.append(t)
        peak = max(peak, rss)
        t, rss = run_timed([PY, "-c", bare])
        theirs.append(t)
        bare_peak = max(bare_peak, rss)
    o, b = statistics.median(ours), statistics.median(theirs)
    return [
        {"case": f"DuckDB ab evaluate, {n:,} Parquet requests", "ours_s": o, "theirs_s": b,
         "ratio": o / b, "target": "<= 1.3", "ok": o / b <= 1.3,
         "note": (f"generated in {generated:.1f} s; " if generated else "reused; ")
         + f"{path.stat().st_size / 1e9:.2f} GB; memory_limit {memory}; threads {threads}"},
        {"case": f"DuckDB ab evaluate peak memory, {n:,} requests", "ours_s": peak / 1e6,
         "theirs_s": bare_peak / 1e6, "ratio": None, "target": "< 300 MB", "ok": peak < 300e6,
         "unit": "MB"},
    ]


def spark_case(tmp: Path, n: int, repeat: int, keep: Path | None) -> list[dict[str, Any]]:
    """In this process: one local session, mlops and the bare query on it."""
    from pyspark.sql import SparkSession

    from mlops_cli import Project
    from mlops_cli.sources import use_spark_session

    path, _ = requests_file(tmp, keep, n)
    spark = (
        SparkSession.builder.master(f"local[{THREADS}]").appName("mlops-bench")
        .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4").config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC").getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    use_spark_session(spark)
    try:
        root = tmp / "spark-proj"
        project_with_source(root, {"engine": "spark", "path": str(path)})
        project = Project.open(root)
        spark.read.parquet(str(path)).createOrReplaceTempView("bare")
        bare = BARE_SUMS.format(relation="bare", start=START)
        # Both warmed up once (the JVM compiles each plan's code on its first run; mlops
        # imports its statistics on its first decision and takes the tail threshold from
        # the first day), then timed alternately.
        spark.sql(bare).collect()
        counted = project.ab.evaluate_test("t").to_dict()["requests"]
        if counted != n:
            raise RuntimeError(f"evaluate_test counted {counted} requests, not {n}")
        ours, theirs = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            project.ab.evaluate_test("t")
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            spark.sql(bare).collect()
            theirs.append(time.perf_counter() - start)
    finally:
        use_spark_session(None)
        spark.stop()
    o, b = statistics.median(ours), statistics.median(theirs)
    return [{"case": f"Spark local ab evaluate, {n:,} rows", "ours_s": o, "theirs_s": b,
             "ratio": o / b, "target": "<= 1.5", "ok": o / b <= 1.5}]


def drift_case(tmp: Path, n: int, window: int, repeat: int) -> list[dict[str, Any]]:
    import duckdb

    lake = tmp / "drift-lake"
    con = duckdb.connect(config={"threads": THREADS, "memory_limit": "1GB"})
    con.execute(
        f"""COPY (
      SELECT prediction, confidence, ts, seq, CAST(ts AS DATE) AS day FROM (
        SELECT 0.3 + 1.2 * (random() + random() + random() - 1.5) AS prediction,
          0.6 + 0.3 * random() AS confidence,
          TIMESTAMPTZ '2026-03-01 00:00:00+00'
            + to_microseconds(CAST(range * (2592000000000 // {n}) AS BIGINT)) AS ts,
          range AS seq
        FROM range({n}))
    ) TO '{lake}' (FORMAT parquet, PARTITION_BY (day))"""
    )
    # The project's own log: the reference, and the same last `window` samples (plus as many
    # before them) as production records.
    ref = tmp / "ref.jsonl"
    prod = tmp / "prod.jsonl"
    con.execute(
        f"""COPY (SELECT 0.5 * (random() + random() + random() - 1.5) AS prediction,
          0.6 + 0.3 * random() AS confidence FROM range(10000)) TO '{ref}' (FORMAT json)"""
    )
    con.execute(
        f"""COPY (SELECT prediction, confidence,
          strftime(ts AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%fZ') AS ts
        FROM read_parquet('{lake}/**/*.parquet', hive_partitioning = false)
        ORDER BY ts, seq OFFSET {max(n - 2 * window, 0)}) TO '{prod}' (FORMAT json)"""
    )
    con.close()
    root = tmp / "drift-proj"
    subprocess.run([MLOPS, "-C", str(root), "init"], check=True, capture_output=True)
    for v in ("1.0.0", "1.1.0"):
        mlops(root, "register", "gnn", v, "--path", "/m")
        mlops(root, "drift", "reference", "gnn", v, "--file", str(ref))
    mlops(root, "drift", "record", "gnn", "1.0.0", "--file", str(prod))
    import yaml

    file = root / "drift-source.yaml"
    file.write_text(yaml.safe_dump(
        {"engine": "duckdb", "path": str(lake), "threads": THREADS, "memory_limit": MEMORY}
    ))
    mlops(root, "drift", "source", "gnn", "1.1.0", str(file))
    ours, theirs = [], []
    for _ in range(repeat):
        args = ["drift", "check", "--window", str(window), "--json"]
        ours.append(run_timed([MLOPS, "-C", str(root), *args[:2], "gnn", "1.1.0", *args[2:]])[0])
        theirs.append(run_timed([MLOPS, "-C", str(root), *args[:2], "gnn", "1.0.0", *args[2:]])[0])
    o, b = statistics.median(ours), statistics.median(theirs)
    return [{"case": f"drift check, window {window:,} of {n:,} Parquet rows by day",
             "ours_s": o, "theirs_s": b, "ratio": o / b, "target": "<= 3",
             "ok": o / b <= 3, "compared_with": "the same check on the project's log"}]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=100_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=["duckdb", "spark", "drift"])
    parser.add_argument("--keep", type=Path, help="write the requests here once, then reuse")
    parser.add_argument("--memory-limit", help="DuckDB's, in the duckdb case")
    parser.add_argument("--threads", type=int, help="DuckDB's, in the duckdb case")
    args = parser.parse_args()
    div = 100 if args.quick else 1
    chosen = args.only or ["duckdb", "spark", "drift"]
    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if "duckdb" in chosen:
            n = args.requests // div
            memory = args.memory_limit or (MEMORY if n <= 10_000_000 else MEMORY_FULL)
            threads = args.threads or (THREADS if n <= 10_000_000 else THREADS_FULL)
            cases += duckdb_case(tmp, n, args.repeat, args.keep, memory, threads)
        if "spark" in chosen:
            cases += spark_case(tmp, 10_000_000 // div, args.repeat, args.keep)
        if "drift" in chosen:
            cases += drift_case(tmp, 10_000_000 // div, 1_000_000 // div, args.repeat)
    if args.json:
        print(json.dumps(cases, indent=2))
    else:
        for c in cases:
            ratio = f"{c['ratio']:.2f}x" if c["ratio"] else "-"
            print(f"{c['case']}: ours {c['ours_s']:.2f}, theirs {c['theirs_s'] or 0:.2f}, "
                  f"{ratio} (target {c['target']}) {'ok' if c['ok'] else 'MISSED'}")
    sys.exit(0 if all(c["ok"] for c in cases) else 1)


if __name__ == "__main__":
    main()
