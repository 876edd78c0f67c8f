"""Registry commands at 100,000 versions in 50 model types against the same on a fresh project.

Builds two projects: a fresh one (the same 50 model types, 2 versions each) and a large one
(50 types x 2,000 versions = 100,000; `--quick`: 50 x 200 = 10,000). The large one is written
directly through the library in bulk, not by 100,000 CLI calls: a store transaction puts
every type's versions (`ModelType`, `VersionRecord`) into the registry state and
commits it, in one transaction (one commit). Then it times what users run, each a fresh process
(median of --repeat runs):

    mlops champion t00          (and its peak memory, ru_maxrss)
    mlops register t00 VERSION  (a new version each run)
    mlops promote t00 VERSION   (between two versions)
    mlops ab assign t01 USER    (a test runs on t01)

and the service path: after a promote made by another process, the first
`get_version_for_request` of a service's open project (its snapshot refresh plus one route;
three per run).
Targets: each at most 2x the fresh project's; champion's peak memory under 100 MB.

python benchmarks/registry_scale.py [--quick] [--versions N] [--repeat R] [--json] [--postgres]

With --postgres both projects are databases on a PostgreSQL server started like the tests do
(tests/pg_server.py, fsync on).
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

from mlops_cli import ABTestConfig, Project
from mlops_cli.state import ModelType, VersionRecord

MLOPS = str(Path(sys.executable).with_name("mlops"))
ROOT = Path(__file__).resolve().parent.parent
TYPES = 50
STAMP = "2026-11-26T00:00:00.000000Z"


def version_name(i: int) -> str:
    return f"{1 + i // 1000}.{i % 1000}.0"


def build(location: str, per_type: int) -> Project:
    """`TYPES` model types of `per_type` versions, the last champion; a test runs on t01."""
    project = Project.init(location)
    models = {}
    for t in range(TYPES):
        name = f"t{t:02d}"
        versions = {
            version_name(i): VersionRecord(
                model_path=f"/models/{name}/{i}.pt",
                config={"lr": 0.001, "layers": 4},
                traffic_percentage=0.0,
                registered_at=STAMP,
                description="nightly retrain",
                tags={"team": "ranking"},
                sha256=None,
                size_bytes=None,
                deprecated=False,
            )
            for i in range(per_type)
        }
        champion = version_name(per_type - 1)
        versions[champion].traffic_percentage = 100.0
        models[name] = ModelType(name, champion, [], versions)
    with project.store.transaction() as txn:
        for name, model in models.items():
            txn.state.models[name] = model
    project.ab.start_test(ABTestConfig("scale-test", "t01", treatment_version=version_name(0)))
    return project


def run(location: str, *args: str) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of one CLI command."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [MLOPS, "-C", location, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    assert proc.stderr is not None
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"mlops {' '.join(args)} failed: {proc.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss * 1024


def peak_rss(location: str, *args: str) -> int:
    """Peak RSS (bytes) of one CLI command, started by a small Python of its own: a child
    forked from this process would report this process's size (Linux counts it from the fork)."""
    probe = (
        "import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:], "
        "stdout=subprocess.DEVNULL); print(os.wait4(p.pid, 0)[2].ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, MLOPS, "-C", location, *args],
        check=True, capture_output=True, text=True,
    )
    return int(out.stdout) * 1024


def measure(location: str, per_type: int, repeat: int) -> dict[str, float]:
    out: dict[str, list[float]] = {
        "champion": [], "register": [], "promote": [], "ab assign": [], "snapshot refresh": [],
    }
    memory = []
    service = Project.open(location)
    service.registry.get_version_for_request("t00", "warm")
    for i in range(repeat):
        out["champion"].append(run(location, "champion", "t00")[0])
        memory.append(peak_rss(location, "champion", "t00"))
        new = f"900.{i}.0"
        out["register"].append(run(location, "register", "t00", new, "--path", "/m.pt")[0])
        target = version_name(i % (per_type - 1))  # never the champion
        out["promote"].append(run(location, "promote", "t00", target)[0])
        out["ab assign"].append(run(location, "ab", "assign", "t01", f"user-{i}")[0])
        last = version_name(per_type - 1)
        for j, version in enumerate((last, target, last)):
            run(location, "promote", "t00", version)  # by another process
            start = time.perf_counter()
            served = service.registry.get_version_for_request("t00", f"user-{i}-{j}")
            out["snapshot refresh"].append(time.perf_counter() - start)
            assert served.version == version, (served.version, version)
    service.close()
    figures = {k: statistics.median(v) for k, v in out.items()}
    figures["champion peak MB"] = max(memory) / 1e6
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 versions, not 100,000")
    parser.add_argument("--versions", type=int, help="versions per model type (default 2,000)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    per_type = args.versions or (200 if args.quick else 2_000)
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        locations = [f"{tmp}/fresh", f"{tmp}/large"]
        if args.postgres:
            sys.path.insert(0, str(ROOT / "tests"))
            from pg_server import benchmark_server

            server = benchmark_server()
            locations = [server.url(server.create_database()) for _ in range(2)]
        try:
            build(locations[0], 2).close()
            start = time.perf_counter()
            build(locations[1], per_type).close()
            built = time.perf_counter() - start
            fresh = measure(locations[0], 2, args.repeat)
            large = measure(locations[1], per_type, args.repeat)
        finally:
            if server is not None:
                server.cleanup()
    total = TYPES * per_type
    ratio = {k: large[k] / fresh[k] for k in fresh if k != "champion peak MB"}
    ok = all(r <= 2 for r in ratio.values()) and large["champion peak MB"] < 100
    result = {
        "store": "postgres" if args.postgres else "files",
        "versions": total,
        "model_types": TYPES,
        "build_s": round(built, 1),
        "fresh": {k: round(v, 4) for k, v in fresh.items()},
        "large": {k: round(v, 4) for k, v in large.items()},
        "ratio": {k: round(v, 2) for k, v in ratio.items()},
        "target": "each <= 2x the fresh project's; champion's peak memory < 100 MB",
        "ok": ok,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['store']}: {total:,} versions in {TYPES} types (built in {built:.1f} s); "
            f"median of {args.repeat} runs"
        )
        print(f"{'case':<18}{'fresh':>10}{'large':>10}{'ratio':>8}")
        for key in fresh:
            unit = "" if key.endswith("MB") else " s"
            r = f"{ratio[key]:>8.2f}" if key in ratio else f"{'':>8}"
            print(f"{key:<18}{fresh[key]:>8.3f}{unit:2}{large[key]:>8.3f}{unit:2}{r}")
        print("target met" if ok else "target MISSED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
