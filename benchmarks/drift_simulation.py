"""Drift detection with fixed seeds: alarm calibration and power, repeated checks, hooks once.

    python benchmarks/drift_simulation.py [--runs 500] [--weeks 60] [--trials 3]

1. Alarms per check (`drift.components` and `drift.alarms`, the functions `check()` calls, at
   the default `drift.alarm_alpha`): a fresh reference of 10,000 and a fresh window per run;
   predictions N(0, 1) or LogNormal(0, 1), confidence Beta(8, 2). The share of runs where any
   component alarm fires, per scenario. Targets: no drift at most 1% (windows 10,000 and
   1,000); at window 10,000 a 0.25 sd mean shift, sd x1.5 about the mean, 10% of the window
   moved +3 sd, confidence mean x0.95 (Beta with a + b = 10) at least 95%; at window 1,000 a
   0.5 sd shift and confidence mean x0.90 at least 95%.
2. Repeated checks: a stationary stream of one sample a second, checked every 10 minutes on
   the last 10,000 samples (the default window) against a reference of 10,000, for a week
   (1,008 checks); a fresh reference and stream per week. Target: at most 5% of weeks hold an
   alarm. (An alarm needs its effect at the floor, so the p-values are computed only for the
   checks where an effect reaches one: the outcome is the same.)
3. Hooks once, through a project: a `retrain` hook, four checker processes started together,
   each recording a one-sigma shifted batch and checking, 50 checks in all that stay at
   `retrain`; counts the hook's runs (target: exactly 1 per trial).
"""

from __future__ import annotations

import argparse
import math
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
from mlops_cli.drift import ALARM_FLOORS, alarms, components, fired
from mlops_cli.ks import ecdf_distances
from mlops_cli.schema import DEFAULT_SETTINGS

ALPHA = float(DEFAULT_SETTINGS["drift"]["alarm_alpha"])
LOGNORMAL_MEAN, LOGNORMAL_SD = math.exp(0.5), math.sqrt((math.e - 1) * math.e)


def predictions(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    return rng.normal(0.0, 1.0, n) if kind == "normal" else rng.lognormal(0.0, 1.0, n)


def sd_of(kind: str) -> float:
    return 1.0 if kind == "normal" else LOGNORMAL_SD


def mean_of(kind: str) -> float:
    return 0.0 if kind == "normal" else LOGNORMAL_MEAN


def window(
    rng: np.random.Generator, kind: str, n: int, scenario: str
) -> tuple[np.ndarray, np.ndarray]:
    """A window of n samples under one scenario (shifts in units of the population's sd)."""
    pred = predictions(rng, kind, n)
    conf = rng.beta(8.0, 2.0, n)
    sd, mean = sd_of(kind), mean_of(kind)
    if scenario.startswith("shift "):
        pred = pred + float(scenario.split()[1]) * sd
    elif scenario == "sd x1.5":
        pred = mean + 1.5 * (pred - mean)
    elif scenario == "10% +3 sd":
        moved = rng.random(n) < 0.1
        pred = np.where(moved, pred + 3.0 * sd, pred)
    elif scenario.startswith("confidence x"):
        m = 0.8 * float(scenario.split("x")[1])
        conf = rng.beta(10.0 * m, 10.0 * (1.0 - m), n)
    return pred, conf


SCENARIOS = [  # (window, scenario, target, at least?)
    (10_000, "none", 0.01, False),
    (10_000, "shift 0.25", 0.95, True),
    (10_000, "sd x1.5", 0.95, True),
    (10_000, "10% +3 sd", 0.95, True),
    (10_000, "confidence x0.95", 0.95, True),
    (1_000, "none", 0.01, False),
    (1_000, "shift 0.5", 0.95, True),
    (1_000, "confidence x0.90", 0.95, True),
]
REFERENCE = 10_000


def alarm_rate(
    kind: str, size: int, scenario: str, runs: int, seed: int
) -> tuple[float, Counter[str]]:
    rng = np.random.default_rng(seed)
    which: Counter[str] = Counter()
    hits = 0
    for _ in range(runs):
        ref_pred, ref_conf = predictions(rng, kind, REFERENCE), rng.beta(8.0, 2.0, REFERENCE)
        pred, conf = window(rng, kind, size, scenario)
        names = fired(alarms(components(ref_pred, ref_conf, pred, conf), ALPHA))
        hits += bool(names)
        which.update(names)
    return hits / runs, which


def effects_reach_a_floor(
    ref_sorted: np.ndarray, ref_sd: float, ref_conf_mean: float, pred: np.ndarray, conf: np.ndarray
) -> bool:
    """Whether any alarm's effect reaches its floor (the alarm needs it besides its p-value)."""
    win_sorted = np.sort(pred)
    _, area = ecdf_distances(ref_sorted, win_sorted)
    if area / ref_sd >= ALARM_FLOORS["predictions"]:
        return True
    if (ref_conf_mean - float(np.mean(conf))) / ref_conf_mean >= ALARM_FLOORS["confidence"]:
        return True
    return abs(math.log(float(np.std(pred, ddof=1)) / ref_sd)) >= ALARM_FLOORS["spread"]


def weeks_with_an_alarm(kind: str, weeks: int, seed: int) -> tuple[int, int]:
    """(weeks holding an alarm, checks that alarmed) of a stationary stream."""
    size, every, checks = 10_000, 600, 7 * 24 * 6
    rng = np.random.default_rng(seed)
    alarmed_weeks = alarmed_checks = 0
    for _ in range(weeks):
        ref_pred, ref_conf = predictions(rng, kind, REFERENCE), rng.beta(8.0, 2.0, REFERENCE)
        ref_sorted, ref_sd = np.sort(ref_pred), float(np.std(ref_pred, ddof=1))
        ref_conf_mean = float(np.mean(ref_conf))
        total = size + every * (checks - 1)
        stream_pred, stream_conf = predictions(rng, kind, total), rng.beta(8.0, 2.0, total)
        week_alarmed = False
        for k in range(checks):
            end = size + every * k
            pred, conf = stream_pred[end - size : end], stream_conf[end - size : end]
            if not effects_reach_a_floor(ref_sorted, ref_sd, ref_conf_mean, pred, conf):
                continue
            if fired(alarms(components(ref_pred, ref_conf, pred, conf), ALPHA)):
                alarmed_checks += 1
                week_alarmed = True
        alarmed_weeks += week_alarmed
    return alarmed_weeks, alarmed_checks


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


def calibration(runs: int) -> bool:
    ok = True
    print(f"alarms per check, reference {REFERENCE:,}, alpha {ALPHA}, {runs} runs a cell")
    print("| window | scenario | normal | lognormal | target | alarms that fired |")
    print("|---:|---|---:|---:|---|---|")
    for i, (size, scenario, target, at_least) in enumerate(SCENARIOS):
        rates = []
        which: Counter[str] = Counter()
        for j, kind in enumerate(("normal", "lognormal")):
            rate, names = alarm_rate(kind, size, scenario, runs, 1000 * i + j)
            rates.append(rate)
            which.update(names)
            ok &= rate >= target if at_least else rate <= target
        want = f"{'>=' if at_least else '<='} {target:.0%}"
        names = ", ".join(f"{k} {v}" for k, v in sorted(which.items())) or "-"
        print(f"| {size:,} | {scenario} | {rates[0]:.1%} | {rates[1]:.1%} | {want} | {names} |")
    return ok


def repeated(weeks: int) -> bool:
    ok = True
    print(f"repeated checks: every 10 minutes, window 10,000 sliding, {weeks} weeks each")
    for j, kind in enumerate(("normal", "lognormal")):
        alarmed, checks = weeks_with_an_alarm(kind, weeks, 5000 + j)
        share = alarmed / weeks
        ok &= share <= 0.05
        print(
            f"{kind}: {alarmed} of {weeks} weeks hold an alarm ({share:.1%}; target <= 5%), "
            f"{checks} of {weeks * 1008:,} checks alarmed"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="runs per cell of part 1")
    parser.add_argument("--weeks", type=int, default=60, help="weeks per distribution, part 2")
    parser.add_argument("--trials", type=int, default=3, help="runs of the four-checker case")
    parser.add_argument("--window", type=int, default=1000, help="the hooks case's window")
    parser.add_argument(
        "--parts", default="1,2,3", help="which parts to run, comma separated (default all)"
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    ok = True
    if "1" in parts:
        ok &= calibration(args.runs)
    if "2" in parts:
        ok &= repeated(args.weeks)
    if "3" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            for trial in range(args.trials):
                runs, levels, elapsed = hooks_once(
                    Path(tmp) / f"hooks{trial}", args.window, 100 * (trial + 1)
                )
                print(
                    f"hooks, trial {trial + 1}: {CHECKERS} checkers, {sum(levels.values())} "
                    f"checks (levels {dict(levels)}), the retrain hook ran {runs} time(s) "
                    f"in {elapsed:.1f} s (target 1)"
                )
                ok &= (
                    runs == 1
                    and sum(levels.values()) == CHECKS_IN_ALL
                    and set(levels) == {"retrain"}
                )
    print("all targets met" if ok else "A TARGET WAS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
