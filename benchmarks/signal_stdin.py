"""How fast SIGTERM ends `mlops ab record T --file -` while the writer keeps stdin open.

    python benchmarks/signal_stdin.py [--trials 10] [--wait 5]

Each trial starts the command on a pipe, writes small pieces of requests for a random 0 to
0.3 s (the reader keeps going between two reads), sends SIGTERM and, with the pipe still
open, waits up to --wait seconds. It prints each trial's time from the signal to the exit
and how many trials were still running at the deadline (the command then waited for stdin to
close). Target: none still running, exit status 143, the log unchanged.
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MLOPS = str(Path(sys.executable).with_name("mlops"))
LINE = b'{"variant":"control","inference_time_ms":1.5,"confidence":0.5}\n'


def setup(root: Path) -> Path:
    from mlops_cli import ABTestConfig, ModelVersion, Project

    project = Project.init(root)
    for version in ("1.0.0", "1.1.0"):
        project.registry.register_version(ModelVersion("g", version, model_path="/m"))
    project.ab.start_test(ABTestConfig("t", "g", treatment_version="1.1.0"))
    return root / "logs" / "ab" / "t.jsonl"


def trial(root: Path, log: Path, wait_s: float, rng: random.Random) -> tuple[float | None, int]:
    before = log.read_bytes() if log.exists() else b""
    proc = subprocess.Popen(
        [MLOPS, "-C", str(root), "ab", "record", "t", "--file", "-"],
        stdin=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    for _ in range(100):  # 6 KB per write, 640 KB through a 64 KiB pipe: it is reading
        proc.stdin.write(LINE * 100)
        proc.stdin.flush()
    end = time.monotonic() + rng.uniform(0.0, 0.3)
    while time.monotonic() < end:
        proc.stdin.write(LINE * 5)
        proc.stdin.flush()
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        code = proc.wait(timeout=wait_s)
        took: float | None = time.monotonic() - sent
    except subprocess.TimeoutExpired:
        took = None
    proc.stdin.close()
    code = proc.wait()
    after = log.read_bytes() if log.exists() else b""
    if after != before:
        raise SystemExit(f"the log changed: {len(before)} -> {len(after)} bytes")
    return took, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--wait", type=float, default=5.0)
    args = parser.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "p"
        log = setup(root)
        results = [trial(root, log, args.wait, rng) for _ in range(args.trials)]
    ended = [t for t, _ in results if t is not None]
    codes = sorted({c for _, c in results})
    print(
        f"SIGTERM on an open stdin, {args.trials} trials: {args.trials - len(ended)} still "
        f"running after {args.wait:g} s; exit status {codes}"
    )
    if ended:
        print(
            f"  signal to exit: median {statistics.median(ended) * 1000:.0f} ms, "
            f"max {max(ended) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
