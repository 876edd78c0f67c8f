"""The FastAPI example under real load: uvicorn with several worker processes, a bounded load
generator on 127.0.0.1, the time each request spends inside mlops as the handler measures it.

    python benchmarks/fastapi_load.py [--store dir|pg|both] [--requests N] [--workers 4]
                                      [--connections 32] [--json]

examples/fastapi_service.py reports the time its mlops calls took (routing and the three
records) in a `Server-Timing: mlops;dur=MS` header; this script collects it from every response
and prints its median, p99 and maximum, with the client's request rate. Then it stops uvicorn
with SIGTERM (a normal shutdown: the service's lifespan closes the project) and counts what the
project holds: every request answered must be recorded once in the A/B log (users in the test)
and in the version's serving metrics, so `lost` must be 0 on both stores.

Without --url the PostgreSQL case starts Debian's PostgreSQL as the tests do (tests/pg_server.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlops_cli import ABTestConfig, ModelVersion, Project  # noqa: E402

TEST = "gnn_v2.2_test"
USERS = 5_000
DEADLINE_S = 600  # the whole load run; a hang ends here, not in CI's budget


@dataclass
class LoadResult:
    store: str
    workers: int
    requests: int
    seconds: float
    mlops_ms_p50: float
    mlops_ms_p99: float
    mlops_ms_max: float
    request_ms_p99: float
    recorded_ab: int
    recorded_metrics: int
    expected_ab: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def lost(self) -> int:
        return (self.expected_ab - self.recorded_ab) + (self.requests - self.recorded_metrics)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(location: str, models: Path) -> None:
    """Two versions with a reference set, and a running test at 50%."""
    project = Project.init(location)
    try:
        rng = np.random.default_rng(3)
        for version in ("v2.1.0", "v2.2.0"):
            path = models / f"gnn_{version}.pt"
            path.write_bytes(b"weights")
            project.registry.register_version(
                ModelVersion(model_type="gnn", version=version, model_path=str(path))
            )
            project.drift_detector("gnn", version).set_reference(
                b"".join(
                    orjson.dumps({"prediction": float(x), "confidence": 0.9}) + b"\n"
                    for x in rng.normal(0, 1, 1000)
                )
            )
        project.ab.start_test(
            ABTestConfig(
                name=TEST,
                model_type="gnn",
                control_version="v2.1.0",
                treatment_version="v2.2.0",
                treatment_traffic_pct=50,
            )
        )
    finally:
        project.store.close()


def start_service(location: str, workers: int, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MLOPS_PROJECT_DIR": location}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "examples.fastapi_service:app",
                "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                "--no-access-log", "--log-level", "warning",
            ],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("uvicorn did not listen within 60 s")


async def one_connection(
    port: int, bodies: list[bytes], mlops_ms: list[float], request_ms: list[float]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in bodies:
            started = time.perf_counter()
            writer.write(
                b"POST /diagnose HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            if not lines[0].startswith("HTTP/1.1 200"):
                raise RuntimeError(f"the service answered {lines[0]!r}")
            headers = dict(
                line.split(": ", 1) for line in lines[1:] if ": " in line
            )
            await reader.readexactly(int(headers.get("content-length", "0")))
            request_ms.append((time.perf_counter() - started) * 1000)
            timing = headers["server-timing"]  # mlops;dur=MS
            mlops_ms.append(float(timing.split("dur=", 1)[1]))
    finally:
        writer.close()


async def load(port: int, requests: int, connections: int) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(7)
    users = rng.integers(0, USERS, requests)
    bodies = [
        orjson.dumps({"user_id": f"user{u}", "features": [float(x), 0.5]})
        for u, x in zip(users, rng.normal(0, 1, requests), strict=True)
    ]
    mlops_ms: list[float] = []
    request_ms: list[float] = []
    await asyncio.wait_for(
        asyncio.gather(
            *(
                one_connection(port, bodies[i::connections], mlops_ms, request_ms)
                for i in range(connections)
            )
        ),
        DEADLINE_S,
    )
    return mlops_ms, request_ms


def run(store: str, location: str, models: Path, requests: int, workers: int,
        connections: int, tmp: Path) -> LoadResult:
    prepare(location, models)
    port = free_port()
    proc = start_service(location, workers, port, tmp / f"uvicorn-{store}.log")
    try:
        asyncio.run(load(port, min(200, requests), connections))  # warm every worker up
        started = time.perf_counter()
        mlops_ms, request_ms = asyncio.run(load(port, requests, connections))
        seconds = time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGTERM)  # a normal shutdown: lifespan closes the project
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    total = requests + min(200, requests)
    project = Project.open(location)
    try:
        recorded_ab = sum(project.ab.status(TEST).requests.values())
        recorded_metrics = sum(
            project.registry.metrics("gnn", v).n for v in ("v2.1.0", "v2.2.0")
        )
    finally:
        project.store.close()
    if len(mlops_ms) != requests:
        raise RuntimeError(f"{len(mlops_ms)} of {requests} requests answered")
    ms = np.asarray(mlops_ms)
    return LoadResult(
        store=store,
        workers=workers,
        requests=total,
        seconds=seconds,
        mlops_ms_p50=float(np.percentile(ms, 50)),
        mlops_ms_p99=float(np.percentile(ms, 99)),
        mlops_ms_max=float(ms.max()),
        request_ms_p99=float(np.percentile(request_ms, 99)),
        recorded_ab=recorded_ab,
        recorded_metrics=recorded_metrics,
        expected_ab=total,  # at 50% every user is in an arm: each request is recorded
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("dir", "pg", "both"), default="both")
    parser.add_argument("--url", help="an empty PostgreSQL database (else a server is started)")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: list[LoadResult] = []
    with tempfile.TemporaryDirectory(prefix="mlops-load-") as name:
        tmp = Path(name)
        if args.store in ("dir", "both"):
            results.append(
                run("directory", str(tmp / "project"), tmp, args.requests, args.workers,
                    args.connections, tmp)
            )
        if args.store in ("pg", "both"):
            server = None
            url = args.url
            if url is None:
                sys.path.insert(0, str(ROOT / "tests"))
                from pg_server import benchmark_server

                server = benchmark_server()
                url = server.url(server.create_database())
            try:
                results.append(
                    run("postgresql", url, tmp, args.requests, args.workers,
                        args.connections, tmp)
                )
            finally:
                if server is not None:
                    server.cleanup()
    if args.json:
        print(json.dumps([{**asdict(r), "rate": r.rate, "lost": r.lost} for r in results],
                         indent=2))
    else:
        for r in results:
            print(
                f"{r.store}: {r.requests} requests, {r.workers} workers, {r.rate:,.0f} requests/s;"
                f" inside mlops p50 {r.mlops_ms_p50:.3f} ms, p99 {r.mlops_ms_p99:.3f} ms,"
                f" max {r.mlops_ms_max:.1f} ms; request p99 {r.request_ms_p99:.1f} ms;"
                f" recorded {r.recorded_ab} A/B and {r.recorded_metrics} metrics, lost {r.lost}"
            )
    sys.exit(0 if all(r.lost == 0 for r in results) else 1)


if __name__ == "__main__":
    main()
