"""Drift detection end to end through a project (fixed seeds): calibration, power, hooks once.

    python benchmarks/drift_simulation.py [--checks 100] [--window 1000] [--trials 3]

Every figure goes through the library as a service and a cron job would use it: a reference
of 10,000 samples (prediction ~ N(0, 1), confidence ~ N(0.8, 0.05) clipped to [0, 1]) set with
`set_reference`, production batches recorded with `record_batch`, `check()` with
`drift.window_size` = the window, default thresholds and weights.

1. Identical distributions: a fresh window from the reference's distribution before each
   check; counts the checks at level `ok` (target: at least 99 of 100).
2. A one-sigma shift of the predictions: counts the checks at `retrain` or above (target:
   100 of 100).
3. Hooks once: a `retrain` hook, four checker processes started together, each recording a
   shifted batch and checking, 50 checks in all that stay at `retrain`; counts the hook's runs
   (target: exactly 1 per trial).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mlops_cli import ModelVersion, Project

REFERENCE = 10_000
CHECKERS = 4
CHECKS_IN_ALL = 50


def batch(rng: np.random.Generator, n: int, mean: float = 0.0) -> bytes:
    prediction = rng.normal(mean, 1.0, n)
    confidence = np.clip(rng.normal(0.8, 0.05, n), 0.0, 1.0)
    return b"".join(
        orjson.dumps({"prediction": float(p), "confidence": float(c)}) + b"\n"
        for p, c in zip(prediction, confidence, strict=True)
    )


def new_project(root: Path, window: int, seed: int) -> Project:
    project = Project.init(root)
    project.set_setting("drift.window_size", str(window))
    project.registry.register_version(ModelVersion("gnn", "v1.0.0", model_path="/m"))
    project.drift_detector("gnn", "v1.0.0").set_reference(
        batch(np.random.default_rng(seed), REFERENCE)
    )
    return project


def levels_over(
    project: Project, checks: int, window: int, mean: float, seed: int
) -> tuple[Counter[str], list[float]]:
    rng = np.random.default_rng(seed)
    detector = project.drift_detector("gnn", "v1.0.0")
    levels: Counter[str] = Counter()
    scores = []
    for _ in range(checks):
        detector.record_batch(batch(rng, window, mean))
        report = detector.check()
        levels[report.level] += 1
        scores.append(report.current_drift_score)
    return levels, scores


def checker(root: str, checks: int, window: int, seed: int, start: Any) -> None:
    """One checker process: wait for the others, then record a shifted batch and check."""
    rng = np.random.default_rng(seed)
    detector = Project.open(root).drift_detector("gnn", "v1.0.0")
    start.wait()
    for _ in range(checks):
        detector.record_batch(batch(rng, window, 1.0))
        detector.check()


def hooks_once(root: Path, window: int, seed: int) -> tuple[int, Counter[str], float]:
    project = new_project(root, window, seed)
    fired = root / "fired.txt"
    project.set_setting("drift.hooks.retrain", f"echo $$ >> {fired}")
    project.drift_detector("gnn", "v1.0.0").record_batch(
        batch(np.random.default_rng(seed + 1), window, 1.0)
    )
    shares = [CHECKS_IN_ALL // CHECKERS + (i < CHECKS_IN_ALL % CHECKERS) for i in range(CHECKERS)]
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(CHECKERS)
    began = time.perf_counter()
    procs = [
        context.Process(target=checker, args=(str(root), n, window, seed + 10 + i, start))
        for i, n in enumerate(shares)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit("a checker process failed")
    elapsed = time.perf_counter() - began
    history = project.drift_detector("gnn", "v1.0.0").history()
    runs = len(fired.read_text().split()) if fired.exists() else 0
    return runs, Counter(r["level"] for r in history), elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=100)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=3, help="runs of the four-checker case")
    args = parser.parse_args(argv)
    if args.window < 1000:
        raise SystemExit("--window must be at least 1000")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        same, same_scores = levels_over(
            new_project(Path(tmp) / "same", args.window, 1), args.checks, args.window, 0.0, 2
        )
        shifted, shifted_scores = levels_over(
            new_project(Path(tmp) / "shift", args.window, 3), args.checks, args.window, 1.0, 4
        )
        at_retrain = shifted["retrain"] + shifted["critical"]
        print(f"reference {REFERENCE:,}, window {args.window:,}, {args.checks} checks each")
        print(
            f"identical distributions: ok in {same['ok']} of {args.checks} "
            f"(levels {dict(same)}; scores {min(same_scores):.3f} to "
            f"{max(same_scores):.3f}; target >= 99)"
        )
        print(
            f"one-sigma shift: retrain or above in {at_retrain} of {args.checks} "
            f"(levels {dict(shifted)}; scores {min(shifted_scores):.3f} to "
            f"{max(shifted_scores):.3f}; target 100)"
        )
        ok &= same["ok"] >= args.checks * 99 // 100 and at_retrain == args.checks
        for trial in range(args.trials):
            runs, levels, elapsed = hooks_once(
                Path(tmp) / f"hooks{trial}", args.window, 100 * (trial + 1)
            )
            print(
                f"hooks, trial {trial + 1}: {CHECKERS} checkers, {sum(levels.values())} "
                f"checks (levels {dict(levels)}), the retrain hook ran {runs} time(s) "
                f"in {elapsed:.1f} s (target 1)"
            )
            ok &= runs == 1 and sum(levels.values()) == CHECKS_IN_ALL and set(levels) == {"retrain"}
    print("all targets met" if ok else "A TARGET WAS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
