"""Decision quality of `mlops_cli.decision` with users as units, under peeking (fixed seeds).

    python benchmarks/ab_peeking.py [--runs 500]

Each run simulates users who send a heavy-tailed number of requests (1 + floor of a lognormal:
mean about 5, some users in the hundreds), assigns them with the project's sha256 bucketing
(`registry.bucket`, a fresh test name per run), feeds the requests in arrival order to a
`UserTotals` accumulator and calls `decide` at every look, as `mlops ab evaluate` would. A
request's metric is arm mean + a per-user effect + noise (confidence is not clipped to [0, 1]:
the decision rules are pure statistics and the truth stays exactly known).

Prints a table: the A/A error rates at 10% and 50% splits over 20 looks (sample ratio alarms,
false promotions, harm rollbacks, futility), the coverage of the confidence interval for the
user-level effect when one user's requests are strongly correlated, how often and how fast
harmful treatments are rolled back, and the power to promote a true +0.03 confidence gain.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlops_cli.decision import Evaluation, Rules, UserTotals, decide
from mlops_cli.registry import bucket
from mlops_cli.stats import ArmStats, compare, sample_ratio_mismatch

LOGNORMAL_MU, LOGNORMAL_SIGMA = 0.66, 1.3  # 1 + floor(lognormal): mean ~5, tail in the hundreds


@dataclass
class World:
    """The truth of a simulated test: split, arm means, spreads and per-user variance shares."""

    pct: float = 10.0
    requests: int = 20_000
    conf: tuple[float, float] = (0.80, 0.80)
    conf_sd: float = 0.10
    conf_user_share: float = 0.05  # share of the per-request variance that is between users
    ms: tuple[float, float] = (100.0, 100.0)
    ms_sd: float = 10.0
    ms_user_share: float = 0.05
    errors: tuple[float, float] = (0.02, 0.02)


@dataclass
class Run:
    """One simulated test's requests in arrival order."""

    variants: np.ndarray[Any, Any]
    users: np.ndarray[Any, Any]
    treated: np.ndarray[Any, Any]
    ms: np.ndarray[Any, Any]
    conf: np.ndarray[Any, Any]
    errors: np.ndarray[Any, Any]


def simulate(world: World, rng: np.random.Generator, test: str) -> Run:
    counts = 1 + np.floor(rng.lognormal(LOGNORMAL_MU, LOGNORMAL_SIGMA, world.requests)).astype(int)
    n_users = int(np.searchsorted(np.cumsum(counts), world.requests)) + 1
    counts = counts[:n_users]
    counts[-1] -= int(counts.sum()) - world.requests  # exactly `requests` in all
    threshold = round(world.pct * 100)
    treated_user = np.fromiter(
        (bucket(test, f"u{u}") < threshold for u in range(n_users)), bool, n_users
    )
    users = rng.permutation(np.repeat(np.arange(n_users), counts))  # arrival order
    treated = treated_user[users]
    arm = treated.astype(int)

    def metric(means: tuple[float, float], sd: float, user_share: float) -> np.ndarray[Any, Any]:
        per_user = rng.normal(0.0, sd * np.sqrt(user_share), n_users)
        noise = rng.normal(0.0, sd * np.sqrt(1 - user_share), world.requests)
        return np.asarray(means)[arm] + per_user[users] + noise

    return Run(
        np.where(treated, "treatment", "control"),
        users,
        treated,
        metric(world.ms, world.ms_sd, world.ms_user_share),
        metric(world.conf, world.conf_sd, world.conf_user_share),
        rng.random(world.requests) < np.asarray(world.errors)[arm],
    )


def rules(**changes: Any) -> Rules:
    base: dict[str, Any] = {
        "alpha": 0.05,
        "method": "sequential",
        "sequential_tuning": 5000,
        "treatment_traffic_pct": 10.0,
        "min_requests": 1000,
        "duration_days": 7.0,
        "max_error_rate_increase": 0.05,
        "min_confidence_improvement": 0.02,
    }
    return Rules(**{**base, **changes})


Look = Callable[[int, int, UserTotals, Run, int], None]


def run_many(world: World, looks: list[int], runs: int, seed: int, on_look: Look) -> None:
    """Simulate `runs` tests; after each look's requests are added, call on_look."""
    rng = np.random.default_rng(seed)
    for r in range(runs):
        run = simulate(world, rng, f"bench-{seed}-{r}")
        totals = UserTotals()
        previous = 0
        for k, look in enumerate(looks):
            part = slice(previous, look)
            totals.add_columns(
                run.variants[part], run.users[part], run.ms[part], run.conf[part], run.errors[part]
            )
            previous = look
            on_look(r, k, totals, run, look)


def evaluate(config: Rules, totals: UserTotals, days: float) -> Evaluation:
    return decide("bench", config, totals.arm("control"), totals.arm("treatment"), days)


ROWS: list[tuple[str, str, str, str]] = []


def row(what: str, value: str, target: str = "", ok: bool | None = None) -> None:
    verdict = "" if ok is None else ("ok" if ok else "MISSED")
    ROWS.append((what, value, target, verdict))
    print(f"  {what:64s} {value:>16s} {target:>9s} {verdict}", flush=True)


def pct(x: float) -> str:
    return f"{x:.1%}"


def aa(split: float, runs: int, seed: int) -> None:
    world = World(pct=split)
    looks = [world.requests * k // 20 for k in range(1, 21)]
    # Besides the defaults, two stress settings that act on any significant difference:
    # promotion with no minimum gain, rollback with zero margins (all three harm tests on).
    promote_stress = {"min_confidence_improvement": 0.0}
    harm_stress = {
        "max_error_rate_increase": 0.0,
        "max_confidence_drop": 0.0,
        "max_latency_increase_ms": 0.0,
    }
    configs = {
        "defaults": rules(treatment_traffic_pct=split, duration_days=0),
        "promote on any gain, sequential": rules(
            treatment_traffic_pct=split, duration_days=0, **promote_stress
        ),
        "promote on any gain, fixed": rules(
            treatment_traffic_pct=split, duration_days=0, method="fixed", **promote_stress
        ),
        "zero harm margins, sequential": rules(
            treatment_traffic_pct=split, duration_days=0, **harm_stress
        ),
        "zero harm margins, fixed": rules(
            treatment_traffic_pct=split, duration_days=0, method="fixed", **harm_stress
        ),
    }
    srm_users = np.zeros(runs, bool)
    srm_requests = np.zeros(runs, bool)
    first: dict[str, list[str]] = {name: ["none"] * runs for name in configs}
    ever: dict[str, dict[str, np.ndarray[Any, Any]]] = {
        name: {c: np.zeros(runs, bool) for c in ("promote", "harm", "futility")} for name in configs
    }

    def on_look(r: int, k: int, totals: UserTotals, run: Run, look: int) -> None:
        for name, config in configs.items():
            ev = evaluate(config, totals, 0.0)
            outcome = "promote" if ev.decision == "promote" else ev.rollback_cause
            if outcome is not None:
                ever[name][outcome][r] = True
                if first[name][r] == "none":
                    first[name][r] = outcome
            if name == "defaults" and ev.metrics["srm"]["mismatch"]:
                srm_users[r] = True
        treated = int(run.treated[:look].sum())
        if sample_ratio_mismatch(look - treated, treated, split / 100).mismatch:
            srm_requests[r] = True

    run_many(world, looks, runs, seed, on_look)
    label = f"A/A {split:g}% split, 20 looks to 20,000 requests"
    print(f"{label} ({runs} runs):")
    row(
        "sample ratio alarm at any look, users (decide)",
        pct(srm_users.mean()),
        "<= 1%",
        srm_users.mean() <= 0.01,
    )
    row("  same split tested on request counts (not done; for contrast)", pct(srm_requests.mean()))
    for name in configs:
        fixed = name.endswith("fixed")
        target, limit = ("", None) if fixed else ("<= 2%", 0.02)
        promote_ever = float(ever[name]["promote"].mean())
        harm_ever = float(ever[name]["harm"].mean())
        if not name.startswith("zero"):
            ok = None if limit is None else promote_ever <= limit
            row(f"{name}: false promotion at any look", pct(promote_ever), target, ok)
        if not name.startswith("promote"):
            ok = None if limit is None else harm_ever <= limit
            row(f"{name}: harm rollback at any look", pct(harm_ever), target, ok)
        if name == "defaults":
            row(
                f"{name}: futility rollback (first action)",
                pct(first[name].count("futility") / runs),
            )


def coverage(runs: int, seed: int) -> None:
    effect = 0.01
    world = World(pct=50.0, conf=(0.80, 0.80 + effect), conf_user_share=0.3)
    looks = [world.requests * k // 20 for k in range(1, 21)]
    seq = rules(treatment_traffic_pct=50.0)
    fixed = rules(treatment_traffic_pct=50.0, method="fixed")
    cover_last = {"sequential": 0, "fixed": 0, "per request (fixed)": 0}
    cover_all = np.ones(runs, bool)

    def inside(ci: list[float] | tuple[float, float]) -> bool:
        return ci[0] <= effect <= ci[1]

    def on_look(r: int, k: int, totals: UserTotals, run: Run, look: int) -> None:
        ev = evaluate(seq, totals, 7.0)
        ok = inside(ev.metrics["confidence_diff"]["ci"])
        cover_all[r] &= ok
        if k == len(looks) - 1:
            cover_last["sequential"] += ok
            fixed_ci = evaluate(fixed, totals, 7.0).metrics["confidence_diff"]["ci"]
            cover_last["fixed"] += inside(fixed_ci)
            arms = []
            for mask in (~run.treated, run.treated):
                values = run.conf[mask]
                arms.append(ArmStats.from_sums(values.size, values.sum(), values @ values))
            per_request = compare(arms[0], arms[1], 0.05, "fixed", 5000)
            cover_last["per request (fixed)"] += inside(per_request.ci)

    run_many(world, looks, runs, seed, on_look)
    print(
        f"Coverage of the 95% confidence-difference interval, users 30% of the variance, "
        f"50% split, 20 looks ({runs} runs):"
    )
    for name, hits in cover_last.items():
        target = name in ("sequential", "fixed")
        row(
            f"covers the user-level effect at the last look, {name}",
            pct(hits / runs),
            ">= 94%" if target else "",
            hits / runs >= 0.94 if target else None,
        )
    row("covers at every one of the 20 looks, sequential", pct(cover_all.mean()))


def harm(runs: int, seed: int) -> None:
    world_10k = 10_000
    looks = list(range(250, world_10k + 1, 250))
    cases = {
        "confidence 0.10 worse (0.70 vs 0.80)": (World(requests=world_10k, conf=(0.80, 0.70)), {}),
        "latency +60 ms (sd 30, margin 20)": (
            World(requests=world_10k, ms=(100.0, 160.0), ms_sd=30.0),
            {"max_latency_increase_ms": 20.0},
        ),
        "12% vs 2% errors": (World(requests=world_10k, errors=(0.02, 0.12)), {}),
    }
    print(f"Harm, 10% split, evaluated every 250 requests to 10,000, defaults ({runs} runs):")
    for i, (label, (world, changes)) in enumerate(cases.items()):
        config = rules(**changes)
        when = np.full(runs, -1)

        def on_look(
            r: int,
            k: int,
            totals: UserTotals,
            run: Run,
            look: int,
            config: Rules = config,
            when: np.ndarray[Any, Any] = when,
        ) -> None:
            if when[r] < 0:
                ev = evaluate(config, totals, 7.0 * look / world_10k)
                if ev.rollback_cause == "harm":
                    when[r] = look

        run_many(world, looks, runs, seed + i, on_look)
        rolled = when[when >= 0]
        median = f"median {statistics.median(rolled.tolist()):,.0f} req" if rolled.size else "-"
        row(
            f"{label}: rolled back (harm)",
            f"{rolled.size / runs:.1%}",
            ">= 95%",
            rolled.size / runs >= 0.95,
        )
        row(f"  {label}: requests to rollback", median)


def power(runs: int, seed: int) -> None:
    world = World(pct=50.0, conf=(0.80, 0.83))
    looks = list(range(500, world.requests + 1, 500))
    config = rules(treatment_traffic_pct=50.0)
    when = np.full(runs, -1)

    def on_look(r: int, k: int, totals: UserTotals, run: Run, look: int) -> None:
        if when[r] < 0:
            ev = evaluate(config, totals, 7.0)
            if ev.decision == "promote":
                when[r] = look
            elif ev.decision == "rollback":
                when[r] = 10**9  # rolled back: never promoted

    run_many(world, looks, runs, seed, on_look)
    print(
        f"Power, +0.03 confidence (sd 0.1, users 5% of the variance), 50% split, duration met, "
        f"every 500 requests ({runs} runs):"
    )
    for by, target in ((5_000, 0.90), (20_000, 0.99)):
        share = float(((when > 0) & (when <= by)).mean())
        row(f"promoted by {by:,} requests", pct(share), f">= {target:.0%}", share >= target)
    row("rolled back instead", pct(float((when == 10**9).mean())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    started = time.perf_counter()
    aa(10.0, args.runs, seed=1)
    aa(50.0, args.runs, seed=2)
    coverage(args.runs, seed=3)
    harm(args.runs, seed=4)
    power(args.runs, seed=7)
    missed = [r for r in ROWS if r[3] == "MISSED"]
    print(
        f"{len(ROWS) - len(missed)} rows, {len(missed)} targets missed "
        f"({time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
