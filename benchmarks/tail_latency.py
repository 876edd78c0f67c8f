"""The tail-latency guardrail in the calibration world (fixed seeds).

    python benchmarks/tail_latency.py [--runs 500]

The world: 5,000 users a run, each sending 1 + floor(LogNormal(mu 1.2, sigma 1.5)) requests
(about 10.7 on average, the top 1% of users about 19% of the requests), arriving uniformly over
14 days; half the users in each arm (a 50% split); confidence 0.80 (+0.03 in the treatment) +
a per-user offset + request noise (total sd 0.10, intra-user correlation 0.3), clipped to
[0, 1]; errors 2% a request; latency 100 ms * exp(sigma Z - sigma^2 / 2), Z a per-user part
plus request noise (correlation 0.3), so its mean is 100 ms whatever sigma. The control has
sigma 0.3; a tail regression has sigma 0.512, which moves the share above the control's p95
from 5% to 12.9% with the mean held. One evaluation at the end of each day for 14 days, the
project's defaults (`ab.defaults`) with the split set; the first promote or rollback ends the
run. Tau comes from the champion's serving history (20,000 requests of the control's latency)
or, without one, from the first day's control requests, as `ab evaluate` computes them.

Prints, per scenario and source: how often a run is rolled back for tail harm (the
`tail_latency` guardrail among the harms), rolled back for any harm, or promoted.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from mlops_cli.decision import Rules, UserArm, decide
from mlops_cli.schema import DEFAULT_SETTINGS
from mlops_cli.stats import RatioSums
from mlops_cli.tail import TailInput, from_first_day, from_history, sums_from_users

USERS = 5000
DAYS = 14
CONTROL_SIGMA, REGRESSED_SIGMA = 0.3, 0.512
GAIN = 0.03
HISTORY = 20_000


def rules(split: float) -> Rules:
    defaults = dict(DEFAULT_SETTINGS["ab"]["defaults"])
    defaults.update(treatment_traffic_pct=split, tail_latency=True)
    return Rules.from_config(defaults)


def latency(rng: np.random.Generator, user_part: Any, sigma: float) -> Any:
    z = np.sqrt(0.3) * user_part + np.sqrt(0.7) * rng.standard_normal(len(user_part))
    return 100.0 * np.exp(sigma * z - sigma * sigma / 2)


def simulate(rng: np.random.Generator, sigma_t: float, gain: float, split: float) -> dict[str, Any]:
    per_user = 1 + np.floor(rng.lognormal(1.2, 1.5, USERS)).astype(np.int64)
    treated_user = rng.random(USERS) < split / 100
    user = np.repeat(np.arange(USERS), per_user)
    treated = treated_user[user]
    n = len(user)
    conf_offset = rng.normal(0, 0.1 * np.sqrt(0.3), USERS)[user]
    conf = 0.80 + gain * treated + conf_offset + rng.normal(0, 0.1 * np.sqrt(0.7), n)
    ms_user = rng.standard_normal(USERS)[user]
    sigma = np.where(treated, sigma_t, CONTROL_SIGMA)
    z = np.sqrt(0.3) * ms_user + np.sqrt(0.7) * rng.standard_normal(n)
    ms = 100.0 * np.exp(sigma * z - sigma * sigma / 2)
    return {
        "user": user,
        "treated": treated,
        "day": rng.uniform(0, DAYS, n),
        "conf": np.clip(conf, 0, 1),
        "errors": (rng.random(n) < 0.02).astype(float),
        "ms": ms,
    }


def arm_sums(user: Any, values: Any) -> RatioSums:
    d = np.bincount(user, minlength=USERS).astype(float)
    m = np.bincount(user, values, minlength=USERS)
    seen = d > 0
    d, m = d[seen], m[seen]
    return RatioSums(int(seen.sum()), m.sum(), m @ m, d.sum(), d @ d, m @ d)


def one_run(
    rng: np.random.Generator, sigma_t: float, gain: float, history: bool, split: float = 50.0
) -> str:
    """The first action of a run: "tail" (rolled back with tail harm), "harm" (other harm),
    "promote", "futility" or "continue"."""
    run = simulate(rng, sigma_t, gain, split)
    config = rules(split)
    threshold = None
    if history:
        threshold = from_history(latency(rng, rng.standard_normal(HISTORY), CONTROL_SIGMA))
    for day in range(1, DAYS + 1):
        seen = run["day"] < day
        arms = {}
        tails = {}
        arm_masks = (("control", seen & ~run["treated"]), ("treatment", seen & run["treated"]))
        for name, mask in arm_masks:
            user = run["user"][mask]
            arms[name] = UserArm(
                arm_sums(user, run["errors"][mask]),
                arm_sums(user, run["conf"][mask]),
                arm_sums(user, run["ms"][mask]),
            )
            tails[name] = (user, run["ms"][mask])
        if threshold is None:
            first = (run["day"] < 1) & ~run["treated"]
            threshold = from_first_day(run["ms"][first])
        tail = TailInput(None, pending="no threshold")
        if threshold is not None:
            sums = {}
            for name, (user, ms) in tails.items():
                slow = np.bincount(user, (ms > threshold.ms).astype(float), minlength=USERS)
                count = np.bincount(user, minlength=USERS).astype(float)
                keep = count > 0
                sums[name] = sums_from_users(np.column_stack([slow[keep], count[keep]]))
            tail = TailInput(threshold, sums["control"], sums["treatment"])
        found = decide("sim", config, arms["control"], arms["treatment"], float(day), tail)
        if found.decision == "continue":
            continue
        if found.rollback_cause == "harm":
            harmed = found.metrics["guardrails"].get("tail_latency", {}).get("harm")
            return "tail" if harmed else "harm"
        return "promote" if found.decision == "promote" else "futility"
    return "continue"


def scenario(
    runs: int, seed: int, sigma_t: float, gain: float, history: bool, split: float = 50.0
) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    outcomes = [one_run(rng, sigma_t, gain, history, split) for _ in range(runs)]
    return {k: outcomes.count(k) / runs for k in ("tail", "harm", "promote", "futility")}


SCENARIOS = {
    # name: (treatment sigma, confidence gain)
    "tail regression with +0.03": (REGRESSED_SIGMA, GAIN),
    "A/A": (CONTROL_SIGMA, 0.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    print(f"{args.runs} runs a row")
    print("| scenario (5,000 users) | split | tau from | tail harm | other harm | promoted |")
    print("|---|---|---|---|---|---|")
    seed = 0
    for split in (50.0, 10.0):
        for name, (sigma_t, gain) in SCENARIOS.items():
            for history in (True, False):
                seed += 1
                started = time.perf_counter()
                found = scenario(args.runs, seed, sigma_t, gain, history, split)
                source = "champion history" if history else "first day"
                print(
                    f"| {name} | {split:g}% | {source} | {found['tail']:.1%} | "
                    f"{found['harm']:.1%} | {found['promote']:.1%} |"
                    f"  ({time.perf_counter() - started:.0f} s)"
                )


if __name__ == "__main__":
    main()
