"""Decision quality of `mlops ab evaluate` under peeking (fixed seeds).

    python benchmarks/ab_decisions.py [--runs 500]

Prints: A/A false promotions and rollbacks when evaluated after every twentieth of the traffic
(default sequential method vs the fixed method), how often and how fast a harmful treatment is
rolled back, and the power to promote a true +0.03 confidence improvement.
"""

from __future__ import annotations

import argparse
import statistics
import time

from mlops_cli.simulation import Scenario, base_config, share, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    runs = args.runs
    started = time.perf_counter()
    total = 20_000
    twentieths = [total * k // 20 for k in range(1, 21)]
    print(
        f"A/A, {runs} runs of {total} requests (treatment share 10%), evaluated after every "
        "twentieth of the traffic, acting on any significant difference:"
    )
    print(
        "  (false promotions with min_confidence_improvement 0; false rollbacks with "
        "max_error_rate_increase 0)"
    )
    for method in ("sequential", "fixed"):
        promote_cfg = base_config(method=method, duration_days=0, min_confidence_improvement=0.0)
        rollback_cfg = base_config(method=method, duration_days=0, max_error_rate_increase=0.0)
        promotions = simulate(promote_cfg, Scenario(), total, twentieths, runs, seed=1)
        rollbacks = simulate(rollback_cfg, Scenario(), total, twentieths, runs, seed=1)
        print(
            f"  {method:10s} false promotions {share(promotions, 'promote'):6.1%}   "
            f"false rollbacks {share(rollbacks, 'rollback'):6.1%}"
        )
    out = simulate(base_config(duration_days=0), Scenario(), total, twentieths, runs, seed=1)
    print(
        f"  defaults   false promotions {share(out, 'promote'):6.1%}   "
        f"false rollbacks {share(out, 'rollback'):6.1%}"
    )

    looks = list(range(100, 10_001, 100))
    out = simulate(
        base_config(duration_days=0), Scenario(treatment_error=0.12), 10_000, looks, runs, seed=2
    )
    rolled = [o.requests for o in out if o.decision == "rollback"]
    print(
        f"12% vs 2% errors, evaluated every 100 requests: rolled back in "
        f"{share(out, 'rollback'):.1%} of runs, median {statistics.median(rolled):,.0f} "
        "requests"
    )

    looks = list(range(500, 20_001, 500))
    out = simulate(
        base_config(duration_days=0), Scenario(treatment_conf=0.83), 20_000, looks, runs, seed=3
    )
    print(
        "true +0.03 confidence (sd 0.1), defaults, evaluated every 500 requests: promoted by "
        + ", ".join(f"{n:,}: {share(out, 'promote', n):.1%}" for n in (2_000, 5_000, 20_000))
    )
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
