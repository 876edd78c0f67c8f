"""A/B decisions at the project's defaults in the simulated world of DESIGN section 14, with peers.

    python benchmarks/ab_decisions.py [--runs 200] [--boundary-runs 500] [--quick] [--gbstats]
                                      [--jobs N] [--only SCENARIO ...] [--json]

The world (fixed seeds): 5,000 users a run, each sending 1 + floor(LogNormal(1.2, 1.5))
requests at times uniform over 14 days; confidence 0.80 + a per-user offset + request noise
(total sd 0.10, intra-user correlation 0.3) clipped to [0, 1]; latency 100 ms + a per-user
offset + noise (sd 30, correlation 0.3); errors 2% a request. Users are assigned with the
project's sha256 buckets. Scenarios change the treatment only: A/A; +0.03 confidence; +0.03
with errors 2% -> 6%; +0.03 with latency +60 ms; +0.03 with a tail regression (latency
lognormal, sigma 0.3 -> 0.512 with the mean held at 100 ms, so the share above the control's
p95 goes from 5% to 12.9%). Splits 10% and 50%.

The project is driven through its public API, so the figures are those of whatever rules it
has: a test starts in a temporary project (duration_days 7 and every other setting at its
default, only the split set), each day's requests are recorded as one JSONL batch (user ids,
timestamps) and the test is evaluated at the end of each day on an injected clock, up to day
14; the first promote or rollback ends the run. Peers decide on the same data:

- Welch at day 14: a fixed-horizon Welch t test on per-user means (each user's mean
  confidence, latency and error rate) at 0.05: rollback for harm when errors, latency or
  confidence is significantly worse, else promote when confidence is significantly better;
- the original rule: the seed module's per-request Welch test at 0.05 at each daily look
  (users ignored), rolling back when errors, latency or confidence is significantly worse and
  promoting when confidence is significantly better with at least 1,000 requests;
- gbstats 0.8.0 (`--gbstats`): its sequential two-sided t test (tuning 5,000) on the per-user
  ratio metrics, at each daily look, acting on the same signs as the Welch peer. It needs
  numpy < 2, so it runs in its own virtual environment, benchmarks/.gbstats, created here on
  first use; when that cannot be made, the column says it is absent.

Prints a markdown table: per cell, the share of runs promoted and rolled back for harm by
day 14 (futility rollbacks are counted apart) and whether the project meets the issue's
target there (A/A wrong at most 2%; +0.03 promoted at least 80% / 95% at 10% / 50%; harm with
a gain promoted at most 5% and rolled back at least 90%; the tail regression rolled back at
least 90%). A cell within 3 binomial standard errors of a bound after `--runs` is run to
`--boundary-runs` in all. `--quick` runs 20 runs a cell and no more.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mlops_cli import ABTestConfig, ModelVersion, Project
from mlops_cli.registry import bucket

HERE = Path(__file__).resolve().parent
GBSTATS_VENV = HERE / ".gbstats"
GBSTATS_PACKAGES = ["gbstats==0.8.0", "numpy<2"]

USERS = 5_000
DAYS = 14
LOGNORMAL_MU, LOGNORMAL_SIGMA = 1.2, 1.5
CONF_MEAN, CONF_SD = 0.80, 0.10
MS_MEAN, MS_SD = 100.0, 30.0
CORRELATION = 0.3  # intra-user: the per-user offset's share of the variance
ERROR_RATE = 0.02
TAIL_SIGMA = (0.3, 0.512)  # lognormal latency, control and treatment, mean held at MS_MEAN
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
ALPHA = 0.05


@dataclass(frozen=True)
class Scenario:
    """What the treatment changes."""

    name: str
    gain: float = 0.0
    treatment_errors: float = ERROR_RATE
    latency_shift: float = 0.0
    tail: bool = False  # latency lognormal, treatment sigma 0.512 (mean held)


SCENARIOS = [
    Scenario("A/A"),
    Scenario("+0.03 alone", gain=0.03),
    Scenario("+0.03, errors 2% -> 6%", gain=0.03, treatment_errors=0.06),
    Scenario("+0.03, latency +60 ms", gain=0.03, latency_shift=60.0),
    Scenario("+0.03, tail regression", gain=0.03, tail=True),
]
SPLITS = (10.0, 50.0)


@dataclass
class World:
    """One run's draws, shared by every scenario and split (common random numbers)."""

    test: str
    counts: np.ndarray[Any, Any]  # requests per user
    user: np.ndarray[Any, Any]  # each request's user, in time order
    day: np.ndarray[Any, Any]  # each request's day, 0-13
    seconds: np.ndarray[Any, Any]  # its time within the day
    conf_user: np.ndarray[Any, Any]  # standard normal per user
    conf_noise: np.ndarray[Any, Any]  # standard normal per request
    ms_user: np.ndarray[Any, Any]
    ms_noise: np.ndarray[Any, Any]
    uniform: np.ndarray[Any, Any]  # for errors
    bucket: np.ndarray[Any, Any]  # each user's sha256 bucket, 0-9999


def draw(seed: int, run: int) -> World:
    rng = np.random.default_rng([seed, run])
    counts = 1 + np.floor(rng.lognormal(LOGNORMAL_MU, LOGNORMAL_SIGMA, USERS)).astype(np.int64)
    user = np.repeat(np.arange(USERS), counts)
    t = rng.random(user.size) * DAYS * 86400.0
    order = np.argsort(t, kind="stable")
    user, t = user[order], t[order]
    test = f"sim{run}"
    buckets = np.fromiter((bucket(test, f"u{u}") for u in range(USERS)), np.int64, USERS)
    return World(
        test,
        counts,
        user,
        (t // 86400).astype(np.int64),
        t % 86400,
        rng.standard_normal(USERS),
        rng.standard_normal(user.size),
        rng.standard_normal(USERS),
        rng.standard_normal(user.size),
        rng.random(user.size),
        buckets,
    )


@dataclass
class Requests:
    """A scenario's requests in time order, with each request's arm."""

    treated: np.ndarray[Any, Any]
    confidence: np.ndarray[Any, Any]
    ms: np.ndarray[Any, Any]
    error: np.ndarray[Any, Any]


def requests(world: World, scenario: Scenario, split: float) -> Requests:
    treated_user = world.bucket < round(split * 100)
    treated = treated_user[world.user]
    between, within = math.sqrt(CORRELATION), math.sqrt(1 - CORRELATION)
    conf = CONF_MEAN + CONF_SD * (between * world.conf_user[world.user] + within * world.conf_noise)
    conf = np.clip(conf + scenario.gain * treated, 0.0, 1.0)
    z = between * world.ms_user[world.user] + within * world.ms_noise
    if scenario.tail:
        sigma = np.where(treated, TAIL_SIGMA[1], TAIL_SIGMA[0])
        ms = np.exp(math.log(MS_MEAN) - sigma * sigma / 2 + sigma * z)
    else:
        ms = np.maximum(MS_MEAN + MS_SD * z + scenario.latency_shift * treated, 0.0)
    p_error = np.where(treated, scenario.treatment_errors, ERROR_RATE)
    return Requests(treated, conf, ms, world.uniform < p_error)


# -- the project, through its API ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def day_batch(world: World, reqs: Requests, day: int, start: int, stop: int) -> bytes:
    """The day's requests as JSONL with user ids and timestamps (numpy formats the times)."""
    micros = (world.seconds[start:stop] * 1e6).astype(np.int64)
    moments = np.datetime64(START.replace(tzinfo=None) + timedelta(days=day), "us") + micros
    stamps = (np.datetime_as_string(moments, unit="us") + "Z").tolist()
    variants = np.where(reqs.treated[start:stop], "treatment", "control").tolist()
    dumps = orjson.dumps
    lines = [
        dumps(
            {
                "ts": ts,
                "variant": variant,
                "inference_time_ms": ms,
                "confidence": conf,
                "error": err,
                "user_id": f"u{uid}",
            }
        )
        for ts, variant, conf, ms, err, uid in zip(
            stamps,
            variants,
            reqs.confidence[start:stop].tolist(),
            reqs.ms[start:stop].tolist(),
            reqs.error[start:stop].tolist(),
            world.user[start:stop].tolist(),
            strict=True,
        )
    ]
    return b"\n".join(lines) + b"\n" if lines else b""


def project_outcome(world: World, reqs: Requests, split: float, where: Path) -> tuple[str, int]:
    """(outcome, day): `promote`, `harm`, `futility` or `none`, decided by the project."""
    clock = Clock()
    root = where / world.test
    project = Project.init(root, clock=clock)
    try:
        for v in ("v1.0.0", "v2.0.0"):
            project.registry.register_version(ModelVersion("m", v, model_path=f"/m/{v}"))
        project.ab.start_test(
            ABTestConfig(world.test, "m", treatment_version="v2.0.0", treatment_traffic_pct=split)
        )
        bounds = np.searchsorted(world.day, np.arange(DAYS + 1))
        for day in range(DAYS):
            batch = day_batch(world, reqs, day, int(bounds[day]), int(bounds[day + 1]))
            if batch:
                project.ab.record_batch(world.test, batch, batch_id=f"day{day}")
            clock.now = START + timedelta(days=day + 1)
            ev = project.ab.evaluate_test(world.test)
            if ev.decision == "promote":
                return "promote", day + 1
            if ev.decision == "rollback":
                return str(ev.rollback_cause or "harm"), day + 1
        return "none", DAYS
    finally:
        project.close()
        shutil.rmtree(root, ignore_errors=True)


# -- peers on the same data -----------------------------------------------------------------


METRICS = ("errors", "confidence", "inference_time_ms")
HARMFUL = {"errors": 1.0, "confidence": -1.0, "inference_time_ms": 1.0}


def welch(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> tuple[float, float]:
    """Welch's t test of b - a: (difference, two-sided p-value)."""
    from scipy.special import stdtr

    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(b.mean() - a.mean())
    se2 = va + vb
    if se2 <= 0:
        return diff, 1.0
    dof = se2 * se2 / (va * va / (a.size - 1) + vb * vb / (b.size - 1))
    return diff, float(2 * stdtr(dof, -abs(diff) / math.sqrt(se2)))


def signs_decision(signs: dict[str, tuple[float, bool]]) -> str:
    """`harm` when a metric is significantly worse, else `promote` when confidence is
    significantly better, else `none` (the peers' shared reading of their tests)."""
    for metric, (diff, significant) in signs.items():
        if significant and diff * HARMFUL[metric] > 0:
            return "harm"
    diff, significant = signs["confidence"]
    return "promote" if significant and diff > 0 else "none"


def welch_day14(world: World, reqs: Requests) -> str:
    u = world.user
    d = np.bincount(u, minlength=USERS).astype(float)
    seen = d > 0
    treated_user = np.bincount(u, reqs.treated.astype(float), minlength=USERS) > 0
    signs = {}
    for metric, values in (
        ("errors", reqs.error.astype(float)),
        ("confidence", reqs.confidence),
        ("inference_time_ms", reqs.ms),
    ):
        means = np.bincount(u, values, minlength=USERS)[seen] / d[seen]
        arm = treated_user[seen]
        diff, p = welch(means[~arm], means[arm])
        signs[metric] = (diff, p < ALPHA)
    return signs_decision(signs)


def daily_welch(
    values: np.ndarray[Any, Any], arm: np.ndarray[Any, Any], stops: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Per-request Welch tests (treatment minus control) on the first `stops[k]` requests for
    every k at once, from running sums: (differences, two-sided p-values; nan when untestable)."""
    from scipy.special import stdtr

    def cumulative(mask: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
        v = np.where(mask, values, 0.0)
        return [np.concatenate([[0.0], np.cumsum(x)])[stops] for x in (mask * 1.0, v, v * v)]

    (nc, sc, qc), (nt, st, qt) = cumulative(~arm), cumulative(arm)
    with np.errstate(divide="ignore", invalid="ignore"):
        va = (qc - sc * sc / nc) / (nc - 1) / nc
        vb = (qt - st * st / nt) / (nt - 1) / nt
        diff = st / nt - sc / nc
        se2 = va + vb
        dof = se2 * se2 / (va * va / (nc - 1) + vb * vb / (nt - 1))
        p = 2 * stdtr(dof, -np.abs(diff) / np.sqrt(se2))
    untestable = (np.minimum(nc, nt) < 2) | ~(se2 > 0)
    return diff, np.where(untestable, np.nan, p)


def original_rule(world: World, reqs: Requests) -> tuple[str, int]:
    """The seed's rule at each daily look: per-request Welch tests at 0.05 (users ignored)."""
    stops = np.searchsorted(world.day, np.arange(1, DAYS + 1))
    tests = {}
    for metric, values in (
        ("errors", reqs.error.astype(float)),
        ("confidence", reqs.confidence),
        ("inference_time_ms", reqs.ms),
    ):
        diff, p = daily_welch(values, reqs.treated, stops)
        tests[metric] = (diff, p < ALPHA)  # nan compares False: not significant
    for day in range(DAYS):
        signs = {m: (float(d[day]), bool(sig[day])) for m, (d, sig) in tests.items()}
        outcome = signs_decision(signs)
        if outcome == "promote" and stops[day] < 1000:
            outcome = "none"
        if outcome != "none":
            return outcome, day + 1
    return "none", DAYS


def ratio_sums_by_day(world: World, reqs: Requests) -> list[dict[str, list[list[float]]]]:
    """For gbstats: per day, per metric, per arm [n, sum M, sum M^2, sum D, sum D^2, sum MD]."""
    out = []
    bounds = np.searchsorted(world.day, np.arange(1, DAYS + 1))
    for stop in bounds.tolist():
        u = world.user[:stop]
        d = np.bincount(u, minlength=USERS).astype(float)
        arm_of = np.bincount(u, reqs.treated[:stop].astype(float), minlength=USERS) > 0
        seen = d > 0
        look: dict[str, list[list[float]]] = {}
        for metric, values in (
            ("errors", reqs.error[:stop].astype(float)),
            ("confidence", reqs.confidence[:stop]),
            ("inference_time_ms", reqs.ms[:stop]),
        ):
            m = np.bincount(u, values, minlength=USERS)
            arms = []
            for mask in (seen & ~arm_of, seen & arm_of):
                mm, dd = m[mask], d[mask]
                arms.append([float(mask.sum()), mm.sum(), mm @ mm, dd.sum(), dd @ dd, mm @ dd])
            look[metric] = arms
        out.append(look)
    return out


GBSTATS_SCRIPT = r"""
import json, sys
from gbstats.frequentist.tests import SequentialConfig, SequentialTwoSidedTTest
from gbstats.models.statistics import RatioStatistic, SampleMeanStatistic

def stat(row):
    n, ms, mss, ds, dss, md = row
    return RatioStatistic(
        n=int(n),
        m_statistic=SampleMeanStatistic(n=int(n), sum=ms, sum_squares=mss),
        d_statistic=SampleMeanStatistic(n=int(n), sum=ds, sum_squares=dss),
        m_d_sum_of_products=md,
    )

out = []
for run in json.load(sys.stdin):
    looks = []
    for look in run:
        res = {}
        for metric, (c, t) in look.items():
            if min(c[0], t[0]) < 2:
                res[metric] = None
                continue
            r = SequentialTwoSidedTTest(
                stat(c), stat(t),
                SequentialConfig(difference_type="absolute", alpha=0.05,
                                 sequential_tuning_parameter=5000),
            ).compute_result()
            res[metric] = [r.expected, r.ci[0], r.ci[1]]
        looks.append(res)
    out.append(looks)
json.dump(out, sys.stdout)
"""


def gbstats_python() -> str | None:
    """The gbstats 0.8.0 environment's python, made on first use; None when it cannot be."""
    python = GBSTATS_VENV / "bin" / "python"
    if not python.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(GBSTATS_VENV)], check=True)
            subprocess.run(
                [str(GBSTATS_VENV / "bin" / "pip"), "install", "-q", *GBSTATS_PACKAGES],
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"gbstats: cannot make its environment ({exc}); the column is absent")
            shutil.rmtree(GBSTATS_VENV, ignore_errors=True)
            return None
    return str(python)


def gbstats_outcomes(python: str, runs: list[list[dict[str, Any]]]) -> list[tuple[str, int]]:
    done = subprocess.run(
        [python, "-c", GBSTATS_SCRIPT],
        input=json.dumps(runs),
        capture_output=True,
        text=True,
        check=True,
    )
    outcomes = []
    for looks in json.loads(done.stdout):
        outcome = ("none", DAYS)
        for day, look in enumerate(looks, start=1):
            signs = {}
            for metric in METRICS:
                r = look[metric]
                if r is None:
                    signs[metric] = (0.0, False)
                else:
                    signs[metric] = (r[0], r[1] > 0 or r[2] < 0)
            decided = signs_decision(signs)
            if decided != "none":
                outcome = (decided, day)
                break
        outcomes.append(outcome)
    return outcomes


# -- the table ------------------------------------------------------------------------------


@dataclass
class Cell:
    scenario: str
    split: float
    runs: int
    project: dict[str, int]
    welch: dict[str, int]
    original: dict[str, int]
    gbstats: dict[str, int] | None

    def rate(self, outcomes: tuple[str, ...]) -> float:
        return sum(self.project[o] for o in outcomes) / self.runs


def count(outcomes: list[str]) -> dict[str, int]:
    return {k: outcomes.count(k) for k in ("promote", "harm", "futility", "none")}


# The targets for the project's decisions: (outcomes counted, "<=" or ">=", bound).
Target = tuple[tuple[str, ...], str, float]


def targets(scenario: str, split: float) -> list[Target]:
    if scenario == "A/A":
        return [(("promote", "harm"), "<=", 0.02)]
    if scenario == "+0.03 alone":
        return [(("promote",), ">=", 0.80 if split < 50 else 0.95)]
    if scenario == "+0.03, tail regression":
        return [(("harm",), ">=", 0.90)]
    return [(("promote",), "<=", 0.05), (("harm",), ">=", 0.90)]


def met(cell: Cell, target: Target) -> bool:
    outcomes, op, bound = target
    rate = cell.rate(outcomes)
    return rate <= bound if op == "<=" else rate >= bound


def near(cell: Cell, target: Target) -> bool:
    """Within 3 binomial standard errors of the bound: worth more runs."""
    outcomes, _, bound = target
    p = min(max(bound, 0.01), 0.99)
    return abs(cell.rate(outcomes) - bound) < 3 * math.sqrt(p * (1 - p) / cell.runs)


def pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}%"


def target_text(cell: Cell) -> str:
    parts = []
    for outcomes, op, bound in targets(cell.scenario, cell.split):
        what = " or ".join("promoted" if o == "promote" else o for o in outcomes)
        verdict = "ok" if met(cell, (outcomes, op, bound)) else "MISSED"
        parts.append(f"{what} {op} {bound:.0%}: {verdict}")
    return "; ".join(parts)


def render(cells: list[Cell], gbstats_note: str) -> str:
    head = (
        "| scenario | split | runs | mlops promoted | mlops harm | mlops futility | target "
        "| Welch day 14 promoted / harm | original rule promoted / harm "
        "| gbstats promoted / harm |"
    )
    lines = [head, "|" + "---|" * 10]
    for c in cells:
        g = (
            f"{pct(c.gbstats['promote'], c.runs)} / {pct(c.gbstats['harm'], c.runs)}"
            if c.gbstats
            else "absent"
        )
        lines.append(
            f"| {c.scenario} | {c.split:g}% | {c.runs} | {pct(c.project['promote'], c.runs)} "
            f"| {pct(c.project['harm'], c.runs)} | {pct(c.project['futility'], c.runs)} "
            f"| {target_text(c)} "
            f"| {pct(c.welch['promote'], c.runs)} / {pct(c.welch['harm'], c.runs)} "
            f"| {pct(c.original['promote'], c.runs)} / {pct(c.original['harm'], c.runs)} | {g} |"
        )
    if gbstats_note:
        lines.append("")
        lines.append(gbstats_note)
    return "\n".join(lines)


Key = tuple[str, float]
Outcome = tuple[str, str, str, Any]  # mlops, Welch, original rule, gbstats input


def one_run(seed: int, run: int, cells: list[tuple[Scenario, float]], sums: bool) -> list[Outcome]:
    """The outcomes of `cells` on one run's draws (shared by every cell)."""
    world = draw(seed, run)
    out = []
    with tempfile.TemporaryDirectory(prefix="mlops-ab-bench-") as tmp:
        for scenario, split in cells:
            reqs = requests(world, scenario, split)
            out.append(
                (
                    project_outcome(world, reqs, split, Path(tmp))[0],
                    welch_day14(world, reqs),
                    original_rule(world, reqs)[0],
                    ratio_sums_by_day(world, reqs) if sums else None,
                )
            )
    return out


def collect(
    first: int,
    last: int,
    seed: int,
    cells: list[tuple[Scenario, float]],
    sums: bool,
    jobs: int,
    into: dict[Key, list[Outcome]],
) -> None:
    """Runs first..last-1 of `cells`, appended to `into`."""
    from concurrent.futures import ProcessPoolExecutor

    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one_run, seed, r, cells, sums) for r in range(first, last)]
        for i, future in enumerate(futures, start=1):
            for (scenario, split), outcome in zip(cells, future.result(), strict=True):
                into.setdefault((scenario.name, split), []).append(outcome)
            if i % 10 == 0 or i == len(futures):
                print(
                    f"{len(cells)} cells: {i} of {len(futures)} runs "
                    f"({time.perf_counter() - started:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )


def make_cell(scenario: Scenario, split: float, rows: list[Outcome], python: str | None) -> Cell:
    gb = None
    if python:
        gb = count([o for o, _ in gbstats_outcomes(python, [row[3] for row in rows])])
    return Cell(
        scenario.name,
        split,
        len(rows),
        count([row[0] for row in rows]),
        count([row[1] for row in rows]),
        count([row[2] for row in rows]),
        gb,
    )


def run_cells(
    runs: int,
    seed: int,
    scenarios: list[Scenario],
    splits: tuple[float, ...],
    use_gbstats: bool,
    jobs: int = 1,
    boundary_runs: int = 500,
) -> list[Cell]:
    """Every cell with `runs` runs; a cell whose result is near a target's bound gets
    `boundary_runs` in all."""
    python = gbstats_python() if use_gbstats else None
    wanted = [(s, split) for s in scenarios for split in splits]
    rows: dict[Key, list[Outcome]] = {}
    collect(0, runs, seed, wanted, python is not None, jobs, rows)
    cells = {
        (s.name, split): make_cell(s, split, rows[(s.name, split)], None) for s, split in wanted
    }
    close = [
        (s, split)
        for s, split in wanted
        if any(near(cells[(s.name, split)], t) for t in targets(s.name, split))
    ]
    if close and boundary_runs > runs:
        collect(runs, boundary_runs, seed, close, python is not None, jobs, rows)
    return [make_cell(s, split, rows[(s.name, split)], python) for s, split in wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="20 runs a cell")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--gbstats", action="store_true", help="add gbstats 0.8.0's column")
    parser.add_argument(
        "--only", nargs="*", help="scenario names to run (default: all)", default=None
    )
    parser.add_argument("--json", action="store_true", help="print the cells as JSON")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument(
        "--boundary-runs",
        type=int,
        default=500,
        help="runs in all for a cell within 3 standard errors of a target's bound",
    )
    args = parser.parse_args()
    runs = 20 if args.quick else args.runs
    scenarios = [s for s in SCENARIOS if not args.only or s.name in args.only]
    cells = run_cells(
        runs,
        args.seed,
        scenarios,
        SPLITS,
        args.gbstats,
        args.jobs,
        0 if args.quick else args.boundary_runs,
    )
    note = (
        ""
        if all(c.gbstats for c in cells)
        else "gbstats: absent (run with --gbstats; its environment could not be made if given)"
    )
    if args.json:
        print(json.dumps([c.__dict__ for c in cells], indent=2))
    else:
        print(render(cells, note))


if __name__ == "__main__":
    main()
