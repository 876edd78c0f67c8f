"""Statistics against independent sources: GrowthBook's gbstats vectors and scipy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from mlops_cli.stats import ArmStats, compare, compare_rates, sample_ratio_mismatch

VECTORS = json.loads((Path(__file__).parent / "data" / "ab_vectors.json").read_text())["vectors"]


def close(got: float, want: float) -> bool:
    if want == 0 or math.isinf(want):
        return got == want
    return abs(got - want) / abs(want) < 1e-6


@pytest.mark.parametrize("method", ["fixed", "sequential"])
@pytest.mark.parametrize("index", range(len(VECTORS)))
def test_reproduces_gbstats_vectors(index: int, method: str) -> None:
    v = VECTORS[index]
    c, t = v["control"], v["treatment"]
    if v["kind"] == "mean":
        got = compare(
            ArmStats.from_sums(c["n"], c["sum"], c["sum_squares"]),
            ArmStats.from_sums(t["n"], t["sum"], t["sum_squares"]),
            v["alpha"],
            method,
            v["sequential_tuning"],
        )
    else:
        got = compare_rates(
            c["n"], c["errors"], t["n"], t["errors"], v["alpha"], method, v["sequential_tuning"]
        )
    want = v[method]
    assert close(got.estimate, v["estimate"])
    assert close(got.ci[0], want["ci"][0]) and close(got.ci[1], want["ci"][1])
    assert close(got.p_value, want["p_value"]), (got.p_value, want["p_value"])


def test_vectors_cover_both_kinds() -> None:
    assert {v["kind"] for v in VECTORS} == {"mean", "error_rate"} and len(VECTORS) >= 20


def test_fixed_welch_matches_scipy_on_raw_data() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(0.80, 0.10, 900), rng.normal(0.81, 0.14, 150)
    got = compare(
        ArmStats.from_sums(a.size, a.sum(), (a * a).sum()),
        ArmStats.from_sums(b.size, b.sum(), (b * b).sum()),
        0.05,
        "fixed",
        5000,
    )
    ref = scipy.stats.ttest_ind(b, a, equal_var=False)
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    low, high = ref.confidence_interval(0.95)
    assert got.ci == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))


def test_sequential_interval_is_wider_than_fixed() -> None:
    c, t = ArmStats(5000, 0.8, 0.01), ArmStats(5000, 0.81, 0.01)
    fixed, seq = compare(c, t, 0.05, "fixed", 5000), compare(c, t, 0.05, "sequential", 5000)
    assert seq.ci[0] < fixed.ci[0] and seq.ci[1] > fixed.ci[1]
    assert seq.p_value > fixed.p_value


def test_zero_error_arms_get_a_real_interval() -> None:
    d = compare_rates(500, 0, 500, 0, 0.05, "fixed", 5000)
    assert d.estimate == 0.0
    # Agresti-Caffo by hand: p = 1/502 in each arm, se = sqrt(2 p (1-p) / 502), dof 2 * 501
    p = 1 / 502
    se = math.sqrt(2 * p * (1 - p) / 502)
    assert d.ci[1] == pytest.approx(scipy.stats.t.ppf(0.975, 1002.0) * se, rel=1e-6)
    assert d.ci[0] < 0 < d.ci[1]


@pytest.mark.parametrize(
    ("nc", "nt", "share"),
    [(900, 100, 0.1), (1000, 85, 0.1), (480, 520, 0.5), (5000, 4700, 0.5), (30, 20, 0.25)],
)
def test_srm_matches_scipy_chisquare(nc: int, nt: int, share: float) -> None:
    total = nc + nt
    ref = scipy.stats.chisquare([nc, nt], [total * (1 - share), total * share])
    got = sample_ratio_mismatch(nc, nt, share)
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert got.mismatch == (ref.pvalue < 0.001)


def test_srm_not_judged_below_eight_per_arm() -> None:
    assert sample_ratio_mismatch(100, 0, 0.5).mismatch is False
    assert sample_ratio_mismatch(100, 0, 0.5).judged is False
    assert sample_ratio_mismatch(100, 8, 0.5).mismatch is True


def test_figures_closer_than_rounding_are_one_figure() -> None:
    from mlops_cli.stats import ROUNDING, settled

    assert settled(0.9, 0.9 * (1 + ROUNDING * 0.999)) == 0.0
    assert settled(0.9, 0.9 * (1 + ROUNDING * 1.001)) == pytest.approx(0.9 * ROUNDING * 1.001)
    assert settled(100.0, 99.0) == -1.0 and settled(0.0, 0.0) == 0.0
    assert settled(-2.0, -2.0 * (1 - ROUNDING / 2)) == 0.0
    assert settled(0.1, math.inf) == math.inf and settled(-0.02, -math.inf) == -math.inf


def test_one_constant_in_both_arms_is_no_difference_whatever_the_sums_rounding() -> None:
    """Confidence 0.9 in every request, summed in two orders: the means differ in the last bit
    and the variance left by cancellation is rounding; neither is a difference (it was a
    "harm" interval of width 1e-17)."""
    from mlops_cli.stats import RatioSums, compare, compare_ratio, compare_relative

    values = np.full(97, 0.9)
    ones = np.ones(97)
    control = RatioSums.of(values, ones)
    treatment = RatioSums(97, float(sum(values.tolist())), float(sum((values**2).tolist())),
                          97.0, 97.0, float(sum(values.tolist())))
    assert control.m_sum != treatment.m_sum  # the two orders round apart
    for found in (
        compare_ratio(control, treatment, 0.05, "sequential", 5000),
        compare(control.arm_stats(), treatment.arm_stats(), 0.05, "fixed", 5000),
        compare_relative(control.arm_stats(), treatment.arm_stats(), 0.05, "sequential", 5000),
    ):
        assert found.estimate == 0.0
        assert found.ci[0] <= 0.0 <= found.ci[1]
