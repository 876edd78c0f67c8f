"""examples/fastapi_service.py under uvicorn workers: the time its handler spends in mlops.

    python benchmarks/service_http.py [--requests N] [--workers W] [--clients C] [--url URL]

A project (a directory, or --url, an empty PostgreSQL database) with gnn v1.0.0 champion and a
running test against v1.1.0; `uvicorn examples.fastapi_service:app --workers W` on
127.0.0.1; C client threads with keep-alive connections send N POST /diagnose requests in all,
each with a new user_id. In the workers, the module-level names the example calls
(`ab_test_manager`, `model_registry`, `get_drift_detector`) are wrapped to add up the time of
each call: from `assign_variant`'s start to `add_production_sample`'s end, a request's time in
mlops (the handler makes no other call between them but the stand-in model). Each worker
writes a line per request; the script reports the percentiles (of every request the workers
served, the 200 of the warm-up too), and the clients' (the timed run only).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TIMINGS = "MLOPS_BENCH_TIMINGS"  # the directory each worker writes its figures to


def instrument() -> None:
    """In a worker: wrap the example's mlops names so each request's time in them is kept."""
    import examples.fastapi_service as example

    local = threading.local()
    # One line per request, written outside the timed calls (a worker may end without atexit).
    out = open(Path(os.environ[TIMINGS]) / f"{os.getpid()}.txt", "a", buffering=1)  # noqa: SIM115

    class Timed:
        def __init__(self, target: Any, first: str = "", last: str = "") -> None:
            self._target, self._first, self._last = target, first, last

        def __getattr__(self, name: str) -> Any:
            value = getattr(self._target, name)
            if not callable(value):
                return value

            def timed(*args: Any, **kwargs: Any) -> Any:
                if name == self._first:
                    local.total = 0.0
                started = time.perf_counter()
                try:
                    return value(*args, **kwargs)
                finally:
                    local.total = getattr(local, "total", 0.0) + time.perf_counter() - started
                    if name == self._last:
                        out.write(f"{local.total}\n")

            return timed

    example.ab_test_manager = Timed(example.ab_test_manager, first="assign_variant")
    example.model_registry = Timed(example.model_registry)
    detector_of = example.get_drift_detector

    def get_drift_detector(model_type: str, version: str) -> Any:
        started = time.perf_counter()
        detector = detector_of(model_type, version)
        local.total = getattr(local, "total", 0.0) + time.perf_counter() - started
        return Timed(detector, last="add_production_sample")

    example.get_drift_detector = get_drift_detector


def __getattr__(name: str) -> Any:
    """`service_http:app`, as each uvicorn worker imports it: the example's app, instrumented
    in that worker."""
    if name == "app":
        instrument()
        import examples.fastapi_service as example

        return example.app
    raise AttributeError(name)


def setup(location: str) -> None:
    from mlops_cli import ABTestConfig, ModelVersion, Project

    project = Project.init(location, force=location.startswith("postgresql://"))
    project.registry.register_version(ModelVersion("gnn", "v1.0.0", model_path="/m.pt"))
    project.registry.register_version(ModelVersion("gnn", "v1.1.0", model_path="/m.pt"))
    project.ab.start_test(ABTestConfig("gnn_test", "gnn", treatment_version="v1.1.0"))
    project.store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load(port: int, requests: int, clients: int) -> list[float]:
    """Send `requests` POSTs from `clients` threads; the clients' latencies (seconds)."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for i in counter:
            body = json.dumps({"user_id": f"user-{i}", "features": [0.1, 0.2, 0.3]})
            started = time.perf_counter()
            conn.request("POST", "/diagnose", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000, "max_ms": max(values) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--url", help="an empty PostgreSQL database (default: a directory)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        location = args.url or os.path.join(tmp, "project")
        setup(location)
        timings = Path(tmp) / "timings"
        timings.mkdir()
        port = free_port()
        env = dict(os.environ, MLOPS_PROJECT_DIR=location, **{TIMINGS: str(timings)})
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service_http:app", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(args.workers), "--log-level", "warning"],
            env=env, cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("uvicorn did not start") from None
                    time.sleep(0.2)
            load(port, min(200, args.requests), args.clients)  # every worker warm
            started = time.perf_counter()
            latencies = load(port, args.requests, args.clients)
            elapsed = time.perf_counter() - started
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(120)
        spent = [float(t) for f in timings.glob("*.txt") for t in f.read_text().split()]
    result = {
        "store": "PostgreSQL" if args.url else "directory",
        "requests": args.requests,
        "workers": args.workers,
        "clients": args.clients,
        "requests_per_s": args.requests / elapsed,
        "in_mlops": percentiles(spent),
        "client": percentiles(latencies),
        "handled": len(spent),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    m, c = result["in_mlops"], result["client"]
    print(f"{result['store']}, {args.workers} workers, {args.clients} clients, "
          f"{args.requests:,} requests at {result['requests_per_s']:,.0f}/s")
    print(f"time in mlops calls per request: p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms,"
          f" max {m['max_ms']:.1f} ms ({result['handled']:,} requests timed)")
    print(f"client latency: p50 {c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms")


if __name__ == "__main__":
    main()
