"""A ramped rollout in the calibration world: how often the ramp stops harm early, and how
often it promotes a clean gain in time.

    python benchmarks/ramp_rollout.py [--runs 200] [--ramp 5,10,25,50] [--min-users 100]
                                      [--min-hours 24] [--seed 26] [--json]

The world is benchmarks/ab_decisions.py's (DESIGN section 14; fixed seeds): 5,000 users a
run sending 1 + floor(LogNormal(1.2, 1.5)) requests at times uniform over 14 days, confidence
0.80 (sd 0.10, intra-user correlation 0.3), latency 100 ms (sd 30, correlation 0.3), errors
2%; users keep their sha256 bucket. The test starts with `--ramp` and the project's defaults
(duration_days 7, every guardrail at its default, the tail-latency threshold from the first
day's control requests). At the end of each day the test is evaluated exactly as `ab evaluate
--apply` does (`decision.decide` on the ramp's strata, then `ramp.judge_step`): a step that
may advance moves the share up for the next day's requests, a promote or rollback ends the
run. Each request records the step in force when it was served.

Scenarios: the treatment adds +0.03 confidence with errors 2% -> 6% (harm that comes with a
gain); +0.03 alone; A/A. Reported per scenario: the share of runs rolled back for harm at the
first or second step, promoted by day 14, with a sample-ratio alarm at any look; for the harmful
one the share of all users who were served the treatment before the rollback (mean and 95th
percentile over runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab_decisions import DAYS, USERS, Scenario, World, draw, requests

from mlops_cli.decision import UserTotals, decide
from mlops_cli.ramp import (
    DEFAULT_MIN_HOURS,
    DEFAULT_MIN_USERS,
    Strata,
    judge_step,
    new_ramp,
    parse_steps,
    step_status,
)
from mlops_cli.simulation import base_config
from mlops_cli.tail import TailInput, from_first_day

SCENARIOS = [
    Scenario("+0.03, errors 2% -> 6%", gain=0.03, treatment_errors=0.06),
    Scenario("+0.03 alone", gain=0.03),
    Scenario("A/A"),
]


@dataclass
class Outcome:
    decision: str  # promote, rollback (harm / futility), or continue at day 14
    cause: str | None
    day: int
    step: int  # the step the run ended at
    srm_alarm: bool  # a sample-ratio mismatch at any look
    exposed: float  # share of all users served the treatment by the end


def run_once(world: World, scenario: Scenario, steps: list[float], min_users: int,
             min_hours: float) -> Outcome:
    """One ramped test, evaluated at the end of each day."""
    config = base_config(duration_days=7, treatment_traffic_pct=steps[0])
    ramp = new_ramp(steps, min_users, min_hours, "day 0")
    step, step_day = 1, 0
    # each request's arm under every step's share, the scenario's values under treatment
    arms = [requests(world, scenario, share) for share in steps]
    served_step = np.zeros(world.user.size, np.int64)
    tau = None
    srm_alarm = False
    for day in range(DAYS):
        today = world.day == day
        served_step[today] = step
        seen = world.day <= day
        pick = served_step[seen] - 1
        index = np.nonzero(seen)[0]
        treated = np.choose(pick, [a.treated[index] for a in arms])
        conf = np.choose(pick, [a.confidence[index] for a in arms])
        ms = np.choose(pick, [a.ms[index] for a in arms])
        err = np.choose(pick, [a.error[index] for a in arms])
        user = world.user[index]
        if tau is None and day >= 0:  # the first day's control requests set tau
            first = (world.day[index] == 0) & ~treated
            found = from_first_day(ms[first])
            tau = found
        values: dict[str, Any] = {"errors": err, "confidence": conf, "inference_time_ms": ms}
        if tau is not None:
            values["slow"] = ms > tau.ms
        strata = Strata.of(served_step[seen], treated, user, values, steps)
        totals = UserTotals()
        totals.add_columns(
            np.where(treated, "treatment", "control"), user, ms, conf, err
        )
        tail = TailInput(tau) if tau is not None else TailInput(None, pending="first day")
        ramp["step"] = step
        result = decide(
            "ramp", {**config, "treatment_traffic_pct": steps[step - 1]},
            totals.arm("control"), totals.arm("treatment"), float(day + 1), tail, strata,
        )
        srm_alarm = srm_alarm or bool(result.metrics["srm"]["mismatch"])
        status = step_status(
            ramp, strata.users(step, True), 24.0 * (day + 1 - step_day)
        )
        decision = judge_step(
            status, result.decision, result.reasons, result.metrics,
            config["max_error_rate_increase"],
        )
        exposed = np.unique(user[treated]).size / USERS
        if decision in ("promote", "rollback"):
            return Outcome(decision, result.rollback_cause, day + 1, step, srm_alarm, exposed)
        if status.advance:
            step, step_day = step + 1, day + 1
    return Outcome("continue", None, DAYS, step, srm_alarm, exposed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--ramp", default="5,10,25,50")
    parser.add_argument("--min-users", type=int, default=DEFAULT_MIN_USERS)
    parser.add_argument("--min-hours", type=float, default=DEFAULT_MIN_HOURS)
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    steps = parse_steps(args.ramp)
    results: dict[str, list[Outcome]] = {s.name: [] for s in SCENARIOS}
    for run in range(args.runs):
        world = draw(args.seed, run)
        for scenario in SCENARIOS:
            results[scenario.name].append(
                run_once(world, scenario, steps, args.min_users, args.min_hours)
            )
    rows = []
    for name, outcomes in results.items():
        n = len(outcomes)
        harm = [o for o in outcomes if o.decision == "rollback" and o.cause == "harm"]
        early = [o for o in harm if o.step <= 2]
        exposed = np.array([o.exposed for o in harm]) if harm else np.zeros(1)
        rows.append(
            {
                "scenario": name,
                "runs": n,
                "harm_at_step_1_or_2": len(early) / n,
                "harm_any_step": len(harm) / n,
                "promoted_by_day_14": sum(o.decision == "promote" for o in outcomes) / n,
                "futility": sum(o.cause == "futility" for o in outcomes) / n,
                "srm_alarm": sum(o.srm_alarm for o in outcomes) / n,
                "exposed_mean": float(exposed.mean()),
                "exposed_p95": float(np.quantile(exposed, 0.95)),
                "median_day": float(np.median([o.day for o in outcomes])),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"ramp {args.ramp}, a step needs {args.min_users} treated users and "
          f"{args.min_hours:g} hours; {args.runs} runs, seed {args.seed}\n")
    print("| scenario | harm at step 1-2 | harm any step | promoted by day 14 | futility | "
          "sample-ratio alarm | users exposed before a harm rollback (mean / p95) | median day |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['scenario']} | {r['harm_at_step_1_or_2']:.1%} | {r['harm_any_step']:.1%} | "
            f"{r['promoted_by_day_14']:.1%} | {r['futility']:.1%} | {r['srm_alarm']:.1%} | "
            f"{r['exposed_mean']:.2%} / {r['exposed_p95']:.2%} | {r['median_day']:g} |"
        )


if __name__ == "__main__":
    main()
