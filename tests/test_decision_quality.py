"""Decision quality under peeking, through the same `decide` that `ab evaluate` uses.

Fixed seeds, 500 runs each; `python benchmarks/ab_peeking.py` prints the full figures.
"""

from __future__ import annotations

import statistics

import pytest

from mlops_cli.simulation import Scenario, base_config, share, simulate

pytestmark = pytest.mark.slow  # `make test` runs it; `pytest -m 'not slow'` leaves it out

RUNS = 500
TOTAL = 20_000
TWENTIETHS = [TOTAL * k // 20 for k in range(1, 21)]


def test_aa_peeking_keeps_false_promotions_at_most_5_percent() -> None:
    # Acting on any significant improvement (no minimum effect) is the hardest case.
    sequential = simulate(
        base_config(duration_days=0, min_confidence_improvement=0.0),
        Scenario(),
        TOTAL,
        TWENTIETHS,
        RUNS,
        seed=1,
    )
    fixed = simulate(
        base_config(duration_days=0, min_confidence_improvement=0.0, method="fixed"),
        Scenario(),
        TOTAL,
        TWENTIETHS,
        RUNS,
        seed=1,
    )
    assert share(sequential, "promote") <= 0.05
    # the contrast: a fixed-horizon test under the same peeking promotes noise far more often
    assert share(fixed, "promote") > 0.08 > share(sequential, "promote")


def test_aa_peeking_keeps_false_rollbacks_at_most_5_percent() -> None:
    out = simulate(
        base_config(duration_days=0, max_error_rate_increase=0.0),
        Scenario(),
        TOTAL,
        TWENTIETHS,
        RUNS,
        seed=1,
    )
    assert share(out, "rollback", cause="harm") <= 0.05
    defaults = simulate(base_config(duration_days=0), Scenario(), TOTAL, TWENTIETHS, RUNS, seed=1)
    assert share(defaults, "rollback", cause="harm") <= 0.05
    assert share(defaults, "promote") <= 0.05


def test_harmful_treatment_is_rolled_back() -> None:
    looks = list(range(100, 10_001, 100))
    out = simulate(
        base_config(duration_days=0), Scenario(treatment_error=0.12), 10_000, looks, RUNS, seed=2
    )
    # Either cause keeps the control; futility may see first that it cannot gain.
    assert share(out, "rollback") >= 0.95
    median = statistics.median(o.requests for o in out if o.decision == "rollback")
    assert 300 <= median <= 5_000
